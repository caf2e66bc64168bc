//! One failure policy for every stage that writes somewhere: a failure is
//! either **retriable** (a dependency is down: back off, report unhealthy,
//! keep the record) or **poison** (this record can never succeed: the
//! caller dead-letters it with the reason, counts it and moves on).
//!
//! An error the caller recognises as permanent (a name the store refuses,
//! a message the broker says is too large) is poison at once. Any other
//! error is retried with exponential backoff; once the poison budget has
//! passed, the dependency itself is asked whether it answers — if it does,
//! the failure belongs to the record and is poison; if not, the dependency
//! is down and retrying goes on, however long that takes (nothing is lost
//! to an outage). So no record holds its partition much longer than the
//! budget while the dependency works.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a failure means for the record that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The dependency is away or busy: retry.
    Retriable,
    /// The record can never succeed: dead-letter it.
    Poison,
}

/// Backoff and the poison budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay between attempts.
    pub initial: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// How long a record may keep failing while its dependency answers
    /// before it is declared poison.
    pub poison_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            poison_budget: Duration::from_secs(30),
        }
    }
}

/// How an attempt sequence ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt<T, E> {
    Done(T),
    /// The record can never succeed; the last error says why.
    Poison(E),
    /// Shutdown came first.
    Shutdown,
}

/// Exponential backoff with the policy's bounds.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    delay: Duration,
    started: Instant,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            delay: policy.initial,
            started: Instant::now(),
        }
    }

    /// The delay to wait now; the next one doubles, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay;
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        d
    }

    /// Whether the poison budget has passed since the first failure.
    pub fn over_budget(&self) -> bool {
        self.started.elapsed() >= self.policy.poison_budget
    }

    /// Sleeps the next delay; `false` if shutdown came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

/// Runs `op` until it succeeds, fails with poison, or shutdown comes.
///
/// `classify` says whether an error is poison on its face; `on_error` sees
/// every failure (log it, mark health down). After the poison budget,
/// `dependency_ok` is asked before each further retry: when the
/// dependency answers, the record is poison.
pub async fn retry<T, E, Op, OpFut, Dep, DepFut>(
    policy: RetryPolicy,
    shutdown: &CancellationToken,
    mut op: Op,
    classify: impl Fn(&E) -> Failure,
    mut dependency_ok: Dep,
    mut on_error: impl FnMut(&E, Duration),
) -> Attempt<T, E>
where
    Op: FnMut() -> OpFut,
    OpFut: Future<Output = Result<T, E>>,
    Dep: FnMut() -> DepFut,
    DepFut: Future<Output = bool>,
{
    let mut backoff = Backoff::new(policy);
    loop {
        let e = match op().await {
            Ok(v) => return Attempt::Done(v),
            Err(e) => e,
        };
        if classify(&e) == Failure::Poison {
            return Attempt::Poison(e);
        }
        if backoff.over_budget() && dependency_ok().await {
            return Attempt::Poison(e);
        }
        on_error(&e, backoff.delay);
        if !backoff.wait(shutdown).await {
            return Attempt::Shutdown;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast(budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            poison_budget: Duration::from_millis(budget_ms),
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let errors = AtomicU32::new(0);
        let out = retry(
            fast(10_000),
            &CancellationToken::new(),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 { Err("down") } else { Ok(n) }
            },
            |_| Failure::Retriable,
            || async { true },
            |_, _| {
                errors.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        assert_eq!(out, Attempt::Done(3));
        assert_eq!(errors.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_permanent_error_is_poison_at_once() {
        let calls = AtomicU32::new(0);
        let out: Attempt<(), _> = retry(
            fast(10_000),
            &CancellationToken::new(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("name too long")
            },
            |_| Failure::Poison,
            || async { true },
            |_, _| {},
        )
        .await;
        assert_eq!(out, Attempt::Poison("name too long"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failing_while_the_dependency_answers_is_poison_after_the_budget() {
        let t = Instant::now();
        let out: Attempt<(), _> = retry(
            fast(50),
            &CancellationToken::new(),
            || async { Err("rejected") },
            |_| Failure::Retriable,
            || async { true },
            |_, _| {},
        )
        .await;
        assert_eq!(out, Attempt::Poison("rejected"));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn an_outage_is_never_poison_and_shutdown_ends_the_wait() {
        let shutdown = CancellationToken::new();
        let probes = AtomicU32::new(0);
        let stop = shutdown.clone();
        let out: Attempt<(), _> = retry(
            fast(5),
            &shutdown,
            || async { Err("connection refused") },
            |_| Failure::Retriable,
            || async {
                // The dependency stays down; stop after a few probes.
                if probes.fetch_add(1, Ordering::SeqCst) == 20 {
                    stop.cancel();
                }
                false
            },
            |_, _| {},
        )
        .await;
        assert_eq!(out, Attempt::Shutdown);
        assert!(probes.load(Ordering::SeqCst) > 20);
    }
}
