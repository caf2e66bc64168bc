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
use crate::store::{Row, Store, StoreError, shard_of, workload_id};

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
        let mut appends = Appends::default();
        for job in &mut jobs {
            let key = job.key.clone();
            let (org, workload) = split_key(&key);
            appends.add(org, workload, std::mem::take(&mut job.rows));
            if job.deletes.is_empty() && job.prune_before.is_none() {
                continue;
            }
            appends.write(&store, &health, policy, &rx).await;
            let pending = tokio::sync::Mutex::new(PersistJob {
                unload: job.unload,
                key: key.clone(),
                rows: Vec::new(),
                deletes: std::mem::take(&mut job.deletes),
                prune_before: job.prune_before.take(),
            });
            attempt(
                &store,
                &health,
                policy,
                &rx,
                &format!("{org}/{workload}"),
                || forget_once(&store, org, workload, &pending),
                "baseline delete or prune dropped",
            )
            .await;
        }
        appends.write(&store, &health, policy, &rx).await;
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
        let id = workload_id(workload);
        self.by_shard
            .entry(shard_of(org, workload))
            .or_insert_with(|| (org.to_string(), Vec::new()))
            .1
            .extend(rows.into_iter().map(|b| (id, b)));
    }

    /// Appends every shard's rows, one commit each.
    async fn write(
        &mut self,
        store: &Store,
        health: &Health,
        policy: RetryPolicy,
        rx: &mpsc::Receiver<PersistJob>,
    ) {
        for (shard, (org, rows)) in self.by_shard.drain() {
            let n = rows.len() as u64;
            let subject = format!("{org}/{shard}");
            let done = attempt(
                store,
                health,
                policy,
                rx,
                &subject,
                || store.append(&shard, &rows),
                "baseline write dropped",
            )
            .await;
            if done {
                metrics::PERSIST.inc_by(metrics::PersistOutcome::Ok, n);
            }
        }
    }
}

/// Runs one write under the retry policy; whether it landed.
async fn attempt<F, Fut>(
    store: &Store,
    health: &Health,
    policy: RetryPolicy,
    rx: &mpsc::Receiver<PersistJob>,
    subject: &str,
    op: F,
    dropped: &str,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    // At shutdown nothing waits long for an unreachable store.
    let never = CancellationToken::new();
    let attempt = retry::retry(
        policy,
        &never,
        op,
        StoreError::failure,
        || async {
            // Given up at shutdown rather than retried for ever.
            rx.is_closed() || store.probe().await
        },
        |e, delay| {
            metrics::persist_failed(subject, e, delay);
            health.set(Check::LanceDb, false, e.to_string());
        },
    )
    .await;
    match attempt {
        Attempt::Done(()) => {
            health.set(Check::LanceDb, true, "writes succeed");
            true
        }
        Attempt::Poison(e) => {
            metrics::poisoned(
                metrics::PoisonStage::Persist,
                subject,
                &e,
                &format!("{dropped}; it fails while LanceDB answers"),
            );
            false
        }
        Attempt::Shutdown => false,
    }
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
