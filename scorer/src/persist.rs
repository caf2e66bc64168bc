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
use crate::store::{Store, StoreError};

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

/// Persists learned behaviour in the background; retries a failed write
/// with backoff so learned behaviour is not dropped while LanceDB is away.
/// A write that keeps failing while LanceDB answers (or that LanceDB
/// refuses outright) is given up after the poison budget, logged and
/// counted: one workload's table cannot hold every other workload's
/// writes behind it.
pub(crate) async fn persist_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<PersistJob>,
    health: Health,
    policy: RetryPolicy,
    unloading: Unloading,
) {
    // At shutdown nothing waits long for an unreachable store.
    let never = CancellationToken::new();
    while let Some(job) = rx.recv().await {
        let key = job.key.clone();
        let unload = job.unload;
        let (org, workload) = split_key(&key);
        // Held across each attempt's awaits; nothing else contends for it.
        let job = tokio::sync::Mutex::new(job);
        let attempt = retry::retry(
            policy,
            &never,
            || persist_once(&store, org, workload, &job),
            StoreError::failure,
            || async {
                // Given up at shutdown rather than retried for ever.
                rx.is_closed() || store.probe().await
            },
            |e, delay| {
                metrics::persist_failed(org, workload, e, delay);
                health.set(Check::LanceDb, false, e.to_string());
            },
        )
        .await;
        match attempt {
            Attempt::Done(()) => health.set(Check::LanceDb, true, "writes succeed"),
            Attempt::Poison(e) => {
                let rows = job.lock().await.rows.len();
                metrics::poisoned(
                    metrics::PoisonStage::Persist,
                    &format!("{org}/{workload}"),
                    &e,
                    &format!(
                        "baseline write of {rows} rows dropped; it fails while LanceDB answers"
                    ),
                );
            }
            Attempt::Shutdown => {}
        }
        if unload {
            let mut u = unloading.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = u.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    u.remove(&key);
                }
            }
        }
    }
}

/// One attempt at a persist job. Each step is one commit and is dropped
/// from the job once it landed, so a retry never appends an increment
/// twice.
async fn persist_once(
    store: &Store,
    org: &str,
    workload: &str,
    job: &tokio::sync::Mutex<PersistJob>,
) -> Result<(), StoreError> {
    let mut j = job.lock().await;
    if !j.rows.is_empty() {
        store.persist(org, workload, &j.rows).await?;
        metrics::PERSIST.inc_by(metrics::PersistOutcome::Ok, j.rows.len() as u64);
        j.rows.clear();
    }
    if !j.deletes.is_empty() {
        store.delete(org, workload, &j.deletes).await?;
        j.deletes.clear();
    }
    if let Some(cutoff) = j.prune_before {
        store.fold(org, workload, cutoff).await?;
        j.prune_before = None;
    }
    Ok(())
}
