//! The baseline persister: learned, forgotten and pruned behaviour is
//! written to LanceDB in the background, off the scoring path, one job at a
//! time, retried while LanceDB is away and given up (logged, counted) when
//! it fails while LanceDB answers.

use std::collections::HashMap;
use std::sync::Arc;

use outlier_common::retry::{self, Attempt, RetryPolicy};
use outlier_common::telemetry::{Check, Health};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::baseline::{Baseline, Behaviour};
use crate::judge::{WorkloadKey, split_key};
use crate::metrics;
use crate::store::{Row, Store, StoreError, rows_of, shard_of};

/// Workloads unloaded from memory whose last writes the persister has not
/// finished: their baseline is not loaded again until it has (or it would
/// load without them).
pub(crate) type Unloading = Arc<std::sync::Mutex<HashMap<WorkloadKey, u32>>>;

pub(crate) struct PersistJob {
    /// Set when the job carries an unloaded baseline's last writes.
    pub unload: bool,
    pub key: WorkloadKey,
    pub rows: Vec<Behaviour>,
    pub deletes: Vec<u64>,
    /// Behaviours last seen before this are dropped from storage.
    pub prune_before: Option<u64>,
}

impl PersistJob {
    pub fn new(key: WorkloadKey, b: &mut Baseline, rows: Vec<Behaviour>) -> Self {
        Self {
            unload: false,
            key,
            rows,
            deletes: b.take_forgotten(),
            prune_before: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.deletes.is_empty() && self.prune_before.is_none()
    }
}

/// Jobs taken from the queue at a time: their rows are appended with one
/// commit per shard.
const JOBS_PER_ROUND: usize = 1024;

/// Persists learned behaviour in the background; retries a failed write
/// with backoff so learned behaviour is not dropped while LanceDB is away.
/// A write that keeps failing while LanceDB answers (or that LanceDB
/// refuses outright) is given up after the poison budget, logged and
/// counted: one shard cannot hold every other shard's writes behind it.
///
/// Each round takes what is queued (up to [`JOBS_PER_ROUND`] jobs) and
/// appends its rows with one commit per shard; a job's deletes and prune
/// run after every row queued before them, in order.
pub(crate) async fn persist_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<PersistJob>,
    health: Health,
    policy: RetryPolicy,
    unloading: Unloading,
) {
    let mut jobs = Vec::with_capacity(JOBS_PER_ROUND);
    while rx.recv_many(&mut jobs, JOBS_PER_ROUND).await > 0 {
        let writer = Writer {
            store: &store,
            health: &health,
            policy,
            rx: &rx,
        };
        let mut appends = Appends::default();
        for job in &mut jobs {
            let key = job.key.clone();
            let (org, workload) = split_key(&key);
            appends.add(org, workload, std::mem::take(&mut job.rows));
            if job.deletes.is_empty() && job.prune_before.is_none() {
                continue;
            }
            // Its rows land before its deletes and prune; other shards'
            // rows wait for the round's end.
            writer.append(&mut appends, &shard_of(org, workload)).await;
            let pending = tokio::sync::Mutex::new(PersistJob {
                unload: job.unload,
                key: key.clone(),
                rows: Vec::new(),
                deletes: std::mem::take(&mut job.deletes),
                prune_before: job.prune_before.take(),
            });
            writer
                .attempt(
                    &format!("{org}/{workload}"),
                    || forget_once(&store, org, workload, &pending),
                    "baseline delete or prune dropped",
                )
                .await;
        }
        writer.append_all(&mut appends).await;
        let mut u = unloading.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs.drain(..).filter(|j| j.unload) {
            if let Some(n) = u.get_mut(&job.key) {
                *n -= 1;
                if *n == 0 {
                    u.remove(&job.key);
                }
            }
        }
    }
}

/// Rows waiting to be appended, by shard.
#[derive(Default)]
struct Appends {
    by_shard: HashMap<String, (String, Vec<Row>)>,
}

impl Appends {
    fn add(&mut self, org: &str, workload: &str, rows: Vec<Behaviour>) {
        if rows.is_empty() {
            return;
        }
        self.by_shard
            .entry(shard_of(org, workload))
            .or_insert_with(|| (org.to_string(), Vec::new()))
            .1
            .extend(rows_of(workload, rows));
    }
}

/// The persister's writes to LanceDB, under the retry policy.
struct Writer<'a> {
    store: &'a Store,
    health: &'a Health,
    policy: RetryPolicy,
    /// The job queue: once it is closed (shutdown) nothing waits long for
    /// an unreachable store, a write is given up.
    rx: &'a mpsc::Receiver<PersistJob>,
}

impl Writer<'_> {
    /// Appends every shard's pending rows, one commit each.
    async fn append_all(&self, appends: &mut Appends) {
        let shards: Vec<String> = appends.by_shard.keys().cloned().collect();
        for shard in shards {
            self.append(appends, &shard).await;
        }
    }

    /// Appends one shard's pending rows (if any), one commit.
    async fn append(&self, appends: &mut Appends, shard: &str) {
        let Some((org, rows)) = appends.by_shard.remove(shard) else {
            return;
        };
        let n = rows.len() as u64;
        let done = self
            .attempt(
                &format!("{org}/{shard}"),
                || self.store.append(shard, &rows),
                "baseline write dropped",
            )
            .await;
        if done {
            metrics::PERSIST.inc_by(metrics::PersistOutcome::Ok, n);
        }
    }

    /// Runs one write under the retry policy; whether it landed.
    async fn attempt<F, Fut>(&self, subject: &str, op: F, dropped: &str) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let never = CancellationToken::new();
        let call = Call {
            stage: metrics::PoisonStage::Persist,
            subject,
            poison_outcome: &format!("{dropped}; it fails while LanceDB answers"),
        };
        let attempt = retry_lancedb(
            self.store,
            self.health,
            self.policy,
            &never,
            call,
            || self.rx.is_closed(),
            op,
        )
        .await;
        matches!(attempt, Attempt::Done(()))
    }
}

/// What a LanceDB call is, for its logs, metrics and health.
pub(crate) struct Call<'a> {
    /// Loads or writes.
    pub stage: metrics::PoisonStage,
    pub subject: &'a str,
    /// What giving it up as poison means (logged).
    pub poison_outcome: &'a str,
}

/// Runs a LanceDB call (the pipeline's loads, the persister's writes)
/// under the retry policy. While it fails, LanceDB's health check fails
/// and each failure is logged and counted; once it succeeds the check
/// passes again. A call that fails while LanceDB answers (or that LanceDB
/// refuses outright) is given up as poison, logged and counted; one that
/// keeps failing when `give_up` says so, too.
pub(crate) async fn retry_lancedb<T, F, Fut>(
    store: &Store,
    health: &Health,
    policy: RetryPolicy,
    shutdown: &CancellationToken,
    call: Call<'_>,
    give_up: impl Fn() -> bool,
    op: F,
) -> Attempt<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let attempt = retry::retry(
        policy,
        shutdown,
        op,
        StoreError::failure,
        || async { give_up() || store.probe().await },
        |e, delay| {
            metrics::store_failed(call.stage, call.subject, e, delay);
            health.set(Check::LanceDb, false, e.to_string());
        },
    )
    .await;
    match &attempt {
        Attempt::Done(_) => health.set(Check::LanceDb, true, "LanceDB calls succeed"),
        Attempt::Poison(e) => metrics::poisoned(call.stage, call.subject, e, call.poison_outcome),
        Attempt::Shutdown => {}
    }
    attempt
}

/// One attempt at a job's deletes and prune. Each is one commit and is
/// dropped from the job once it landed.
async fn forget_once(
    store: &Store,
    org: &str,
    workload: &str,
    job: &tokio::sync::Mutex<PersistJob>,
) -> Result<(), StoreError> {
    let mut j = job.lock().await;
    if !j.deletes.is_empty() {
        store.delete(org, workload, &j.deletes).await?;
        j.deletes.clear();
    }
    if let Some(cutoff) = j.prune_before {
        store.prune(org, workload, cutoff).await?;
        j.prune_before = None;
    }
    Ok(())
}
