//! The scorer's Kafka loop: consume a micro-batch, decode, score it on a
//! blocking thread, publish every result, and only then store the batch's
//! offsets (at-least-once). Undecodable records go to the dead-letter topic
//! with a reason. Learned behaviour is persisted to LanceDB in the
//! background, off the hot path.
//!
//! Baseline poisoning: after a workload's warm-up (`warmup_events`), an
//! event whose verdict is `alert` is not learned. It is learned only when an
//! operator confirms it benign with a `Feedback` record on the feedback
//! topic (keyed like the event and read co-partitioned with the events
//! topics, so it reaches the scorer that owns the workload); `malicious`
//! feedback removes a behaviour that was learned (say, during warm-up).
//! Until then its repeats on the same host are not alerted again
//! (`repeats.rs`).
//! Only operators may write the feedback topic; feedback-marked records on
//! an events topic are dead-lettered, and so are events on another org's
//! topic (docs/security.md).
//!
//! Rebalances: stored offsets are committed before partitions are revoked,
//! and the baselines of workloads on revoked partitions are persisted and
//! dropped from memory, so the next owner loads them from LanceDB.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outlier_classifier::state::HostBound;
use outlier_common::batch;
use outlier_common::kafka::{self, DeadLetterCopy};
use outlier_common::now_ns;
use outlier_common::retry::Attempt;
use outlier_common::telemetry::{self, Check, Health};
use outlier_proto::Verdict;
use prost::Message as _;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::baseline::Baseline;
use crate::config::ScorerConfig;
use crate::decode::{DeadLetter, Input, Reason, decode};
use crate::deliver::{OutRecord, deliver};
use crate::judge::{Judge, Outcome, WorkloadKey, split_key, workload_key};
use crate::metrics;
use crate::persist::{Call, PersistJob, Unloading, persist_loop, retry_lancedb};
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("baseline store: {0}")]
    Store(#[from] StoreError),
    #[error("http endpoint: {0}")]
    Http(#[from] std::io::Error),
    #[error("scoring thread panicked")]
    ScoringPanicked,
    #[error("{0}")]
    Classifier(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Runs the scorer until `shutdown` fires, then drains: the batch in hand is
/// finished, learned behaviour is persisted, offsets are committed.
pub async fn run(cfg: ScorerConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    cfg.validate().map_err(RunError::Config)?;
    let classifier =
        crate::threat::classifier(&cfg.scoring.classifier).map_err(RunError::Classifier)?;
    let health = Health::new(&[Check::Kafka, Check::LanceDb]);
    telemetry::serve_http(cfg.http_addr, health.clone(), shutdown.clone()).await?;

    let store = Arc::new(Store::open_with_cache(&cfg.baseline.uri, cfg.baseline.cache_mb).await?);
    health.set(
        Check::LanceDb,
        true,
        format!("open at {}", cfg.baseline.uri),
    );

    // The shared events topic, every org's own (by pattern) and the
    // feedback topic, co-partitioned: a workload's feedback is keyed like
    // its events and lands on the same partition number.
    let events_pattern = cfg.kafka.topics.events_pattern();
    let Some((consumer, producer)) = kafka::at_least_once_clients(
        &cfg.kafka,
        "outlier-scorer",
        &cfg.group_id,
        &[&events_pattern, &cfg.kafka.topics.feedback],
        kafka::Assignment::CoPartitioned,
        &health,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    tracing::info!(
        topics = %events_pattern,
        feedback = %cfg.kafka.topics.feedback,
        group = %cfg.group_id,
        baselines = %cfg.baseline.uri,
        "scorer running"
    );

    // The fleet's signatures (immune memory), followed from their topic.
    let signatures = outlier_common::immune::Signatures::default();
    tokio::spawn(outlier_common::immune::follow(
        cfg.kafka.clone(),
        "outlier-scorer",
        signatures.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    // Operators' suppression rules, followed from their topic.
    let suppressions = outlier_common::suppress::Suppressions::default();
    tokio::spawn(outlier_common::suppress::follow(
        cfg.kafka.clone(),
        "outlier-scorer",
        suppressions.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let (persist_tx, persist_rx) = mpsc::channel::<PersistJob>(1024);
    let unloading = Unloading::default();
    let persister = tokio::spawn(persist_loop(
        store.clone(),
        persist_rx,
        health.clone(),
        cfg.limits.retry_policy(),
        unloading.clone(),
    ));

    let mut worker = Worker {
        cfg: &cfg,
        store: &store,
        producer: &producer,
        health: &health,
        shutdown: &shutdown,
        judge: Judge::new(cfg.scoring.clone(), cfg.baseline.warmup_events, classifier)
            .with_signatures(signatures)
            .with_suppressions(suppressions.clone()),
        partition_of: HashMap::new(),
        last_used: HashMap::new(),
        batches: 0,
        poisoned: HashMap::new(),
        unloading,
        suppressions,
        persist: persist_tx,
    };
    kafka::spawn_health_probe(cfg.kafka.clone(), health.clone(), shutdown.clone());
    let settings = batch::Settings {
        max_records: cfg.batch.max_events,
        max_bytes: cfg.batch.max_bytes,
        max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
        max_inflight: cfg.batch.max_inflight,
    };
    let result = batch::run(&consumer, settings, &mut worker, &shutdown).await;
    // What was scored is delivered (or, at shutdown, given up on and
    // redone by the next owner: its offsets are not stored); what was
    // learned is persisted.
    worker.flush(true).await;
    drop(worker);
    if persister.await.is_err() {
        tracing::error!("baseline persister panicked");
    }
    tracing::info!("scorer stopped");
    result
}

struct Worker<'a> {
    cfg: &'a ScorerConfig,
    store: &'a Store,
    producer: &'a FutureProducer,
    health: &'a Health,
    shutdown: &'a CancellationToken,
    judge: Judge,
    /// The partition each loaded workload's records arrive on.
    partition_of: HashMap<WorkloadKey, (String, i32)>,
    /// The batch in which each loaded baseline was last used (for
    /// unloading the least recently used beyond the limit).
    last_used: HashMap<WorkloadKey, u64>,
    /// Batches processed.
    batches: u64,
    /// Workloads whose baseline cannot be loaded while LanceDB answers:
    /// their records are dead-lettered until the entry expires.
    poisoned: HashMap<WorkloadKey, (String, Instant)>,
    unloading: Unloading,
    /// Operators' rules that keep matching flagged events off the alerts.
    suppressions: outlier_common::suppress::Suppressions,
    /// Jobs for the baseline persister.
    persist: mpsc::Sender<PersistJob>,
}

impl batch::Stage for Worker<'_> {
    type Error = RunError;

    /// Flushing learned behaviour (and unloading idle baselines), and
    /// pruning behaviour past the retention.
    fn periods(&self) -> Vec<Duration> {
        vec![
            Duration::from_millis(self.cfg.baseline.flush_interval_ms),
            Duration::from_secs(3600),
        ]
    }

    async fn batch(
        &mut self,
        batch: Vec<OwnedMessage>,
    ) -> Result<Option<batch::Pending>, RunError> {
        self.process(batch).await
    }

    async fn tick(&mut self, which: usize) {
        if which == 0 {
            self.flush(false).await;
            self.evict().await;
            self.report_host_state();
        } else {
            self.prune().await;
        }
    }

    async fn revoked(&mut self, partitions: &[(String, i32)]) {
        self.release(partitions).await;
    }
}

/// How long a workload whose baseline could not be loaded is dead-lettered
/// without trying again.
const POISON_TTL: Duration = Duration::from_secs(300);

/// When `loaded` (batch last used, key) holds more than `max` baselines:
/// its least recently used, down to 90% of `max`.
fn beyond_bound(mut loaded: Vec<(u64, &WorkloadKey)>, max: usize) -> Vec<WorkloadKey> {
    if loaded.len() <= max {
        return Vec::new();
    }
    loaded.sort_unstable();
    let n = loaded.len() - (max - max / 10);
    loaded.into_iter().take(n).map(|(_, k)| k.clone()).collect()
}

/// For each org holding more than `max` of `loaded` (batch last used, key)
/// baselines: its least recently used, down to 90% of `max`.
fn over_their_bound<'a>(
    loaded: impl Iterator<Item = (u64, &'a WorkloadKey)>,
    max: usize,
) -> Vec<(String, Vec<WorkloadKey>)> {
    let mut per_org: HashMap<&str, Vec<(u64, &WorkloadKey)>> = HashMap::new();
    for (used, k) in loaded {
        per_org.entry(split_key(k).0).or_default().push((used, k));
    }
    per_org
        .into_iter()
        .map(|(org, keys)| (org.to_string(), beyond_bound(keys, max)))
        .filter(|(_, victims)| !victims.is_empty())
        .collect()
}

/// Most workloads remembered as poisoned.
const POISONED_MAX: usize = 10_000;

impl Worker<'_> {
    /// Scores one batch and hands its records to the producer. Returns the
    /// batch's delivery (which yields the offsets to store once Kafka
    /// acknowledged every record), or `None` when shutdown interrupted the
    /// batch before it was scored.
    async fn process(
        &mut self,
        batch: Vec<OwnedMessage>,
    ) -> Result<Option<batch::Pending>, RunError> {
        let offsets = kafka::batch_offsets(&batch);
        let max_bytes = self.cfg.limits.max_event_bytes;
        let mut decoded: Vec<Result<Input, DeadLetter>> = batch
            .iter()
            .map(|m| decode(m, &self.cfg.kafka.topics, max_bytes))
            .collect();
        self.batches += 1;
        let now = Instant::now();
        self.poisoned
            .retain(|_, (_, at)| now.duration_since(*at) < POISON_TTL);

        // Load (once per ownership) the baselines of workloads new to us.
        let t = Instant::now();
        let mut needed = HashSet::new();
        for (msg, input) in batch.iter().zip(&decoded) {
            let event = match input {
                Ok(Input::Event(e)) => e,
                Ok(Input::Feedback(f)) => f.event.as_ref().expect("checked in decode"),
                Ok(Input::Heartbeat(_)) | Err(_) => continue,
            };
            let key = workload_key(&event.org, &event.workload);
            if self.poisoned.contains_key(&key) {
                continue;
            }
            self.last_used.insert(key.clone(), self.batches);
            if msg.topic() != self.cfg.kafka.topics.feedback
                && !self.partition_of.contains_key(&key)
            {
                self.partition_of
                    .insert(key.clone(), (msg.topic().to_string(), msg.partition()));
            }
            if !self.judge.baselines.contains_key(&key) {
                needed.insert(key);
            }
        }
        // One scan per shard for the workloads that fall in it.
        let mut by_shard: HashMap<String, Vec<WorkloadKey>> = HashMap::new();
        for key in needed {
            let (org, workload) = split_key(&key);
            by_shard
                .entry(crate::store::shard_of(org, workload))
                .or_default()
                .push(key);
        }
        let mut groups: Vec<Vec<WorkloadKey>> = by_shard.into_values().collect();
        while let Some(keys) = groups.pop() {
            match self.load(&keys).await {
                None => return Ok(None),
                // One workload's failure must not poison the others of its
                // shard: each is tried alone.
                Some(Err(_)) if keys.len() > 1 => {
                    groups.extend(keys.into_iter().map(|k| vec![k]));
                }
                Some(Ok(loaded)) => {
                    self.judge.baselines.extend(keys.into_iter().zip(loaded));
                }
                Some(Err(reason)) => {
                    if self.poisoned.len() >= POISONED_MAX {
                        self.poisoned.clear();
                    }
                    for key in keys {
                        self.last_used.remove(&key);
                        self.partition_of.remove(&key);
                        self.poisoned.insert(key, (reason.clone(), Instant::now()));
                    }
                }
            }
        }
        // Records of poisoned workloads go to the dead-letter topic.
        if !self.poisoned.is_empty() {
            for input in &mut decoded {
                let event = match input {
                    Ok(Input::Event(e)) => e,
                    Ok(Input::Feedback(f)) => f.event.as_ref().expect("checked in decode"),
                    Ok(Input::Heartbeat(_)) | Err(_) => continue,
                };
                if let Some((reason, _)) = self
                    .poisoned
                    .get(&workload_key(&event.org, &event.workload))
                {
                    *input = Err(DeadLetter {
                        reason: format!("baseline cannot be loaded: {reason}"),
                        label: Reason::PoisonBaseline,
                    });
                }
            }
        }
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
        metrics::STAGE_SECONDS.observe(metrics::BatchStage::Load, t.elapsed().as_secs_f64());

        // Score on a blocking thread: CPU work stays off the reactor.
        let t = Instant::now();
        let mut judge = std::mem::take(&mut self.judge);
        let (judge, outcomes) = tokio::task::spawn_blocking(move || {
            let outcomes = judge.score_batch(decoded);
            (judge, outcomes)
        })
        .await
        .map_err(|_| RunError::ScoringPanicked)?;
        self.judge = judge;
        metrics::BEHAVIOURS.set(self.judge.baselines.values().map(|b| b.len() as i64).sum());
        metrics::STAGE_SECONDS.observe(metrics::BatchStage::Score, t.elapsed().as_secs_f64());

        // Publish everything, then wait for every acknowledgement.
        let t = Instant::now();
        let topics = &self.cfg.kafka.topics;
        let mut records: Vec<OutRecord> = Vec::with_capacity(outcomes.len());
        for (msg, outcome) in batch.iter().zip(outcomes) {
            let key = msg.key().unwrap_or_default().to_vec();
            match outcome {
                Outcome::Scored(mut scored) => {
                    let verdict = scored.verdict();
                    let flagged = matches!(verdict, Verdict::Warn | Verdict::Alert);
                    if flagged
                        && let Some(e) = &scored.event
                        && let Some(id) = self.suppressions.matching(e, scored.scored_at_ns)
                    {
                        metrics::SUPPRESSED.inc();
                        scored.suppressed_by = id;
                    }
                    metrics::EVENTS.inc(verdict.into());
                    metrics::SCORE.observe(f64::from(scored.anomaly_score));
                    let lag = scored
                        .scored_at_ns
                        .saturating_sub(scored.event.as_ref().map_or(0, |e| e.ts_ns));
                    metrics::LAG_SECONDS.observe(lag as f64 / 1e9);
                    let payload = scored.encode_to_vec();
                    if flagged && scored.suppressed_by.is_empty() {
                        records.push(OutRecord {
                            topic: topics.alerts.clone(),
                            key: key.clone(),
                            payload: payload.clone(),
                            headers: None,
                        });
                    }
                    records.push(OutRecord {
                        topic: topics.scored.clone(),
                        key,
                        payload,
                        headers: None,
                    });
                }
                Outcome::Applied => metrics::EVENTS.inc(metrics::EventResult::Feedback),
                Outcome::Heartbeat(h) => {
                    metrics::EVENTS.inc(metrics::EventResult::Heartbeat);
                    records.push(OutRecord {
                        topic: topics.heartbeats.clone(),
                        key: h.partition_key().into_bytes(),
                        payload: h.encode_to_vec(),
                        headers: None,
                    });
                }
                Outcome::Dead(dl) => {
                    metrics::dead_lettered(msg, &dl);
                    records.push(OutRecord::dead_letter(
                        &topics.deadletter,
                        DeadLetterCopy::of(msg, &dl.reason),
                    ));
                }
            }
        }
        let producer = self.producer.clone();
        let deadletter = topics.deadletter.clone();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        Ok(Some(Box::pin(async move {
            if !deliver(&producer, &health, &shutdown, records, &deadletter).await {
                return None;
            }
            metrics::STAGE_SECONDS.observe(metrics::BatchStage::Produce, t.elapsed().as_secs_f64());
            Some(offsets)
        })))
    }

    /// Loads the baselines of workloads of one org and shard, retrying
    /// while LanceDB is away; `None` on shutdown, `Some(Err(reason))` when
    /// they cannot be loaded while LanceDB answers (poison: their records
    /// are dead-lettered).
    async fn load(&self, keys: &[WorkloadKey]) -> Option<Result<Vec<Baseline>, String>> {
        // An unloaded baseline's last writes land first.
        while {
            let u = self.unloading.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().any(|k| u.contains_key(k))
        } {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        let org = split_key(&keys[0]).0;
        let workloads: Vec<&str> = keys.iter().map(|k| split_key(k).1).collect();
        let subject = match workloads.as_slice() {
            [one] => format!("{org}/{one}"),
            many => format!(
                "{org}/{} workloads of shard {}",
                many.len(),
                crate::store::shard_of(org, many[0])
            ),
        };
        let cutoff =
            now_ns().saturating_sub(self.cfg.baseline.retention_days * 86_400 * 1_000_000_000);
        let poison_outcome = format!(
            "baseline cannot be loaded while LanceDB answers; the workload's records are dead-lettered for {} s",
            POISON_TTL.as_secs()
        );
        let call = Call {
            stage: metrics::PoisonStage::Load,
            subject: &subject,
            poison_outcome: &poison_outcome,
        };
        let attempt = retry_lancedb(
            self.store,
            self.health,
            self.cfg.limits.retry_policy(),
            self.shutdown,
            call,
            || false,
            || {
                self.store
                    .load_many(org, &workloads, cutoff, self.cfg.baseline.index_params())
            },
        )
        .await;
        match attempt {
            Attempt::Done(b) => {
                tracing::debug!(subject = %subject, "baselines loaded");
                Some(Ok(b))
            }
            Attempt::Poison(e) => Some(Err(e.to_string())),
            Attempt::Shutdown => None,
        }
    }

    /// Persists and unloads the least recently used baselines beyond
    /// `limits.max_loaded_baselines` (down to 90% of it, so eviction runs
    /// in rounds, not at every batch). They load again from LanceDB when
    /// their workload reports; their in-memory adaptation history starts
    /// over.
    async fn evict(&mut self) {
        self.evict_per_org().await;
        let max = self.cfg.limits.max_loaded_baselines;
        if self.judge.baselines.len() <= max {
            return;
        }
        let victims = beyond_bound(self.loaded_by_use().collect(), max);
        let n = victims.len();
        for key in victims {
            self.unload(&key).await;
            metrics::EVICTIONS.inc(metrics::EvictionBound::Total);
        }
        tracing::info!(
            evicted = n,
            loaded = self.judge.baselines.len(),
            limit = max,
            "unloaded idle baselines (limits.max_loaded_baselines)"
        );
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
    }

    /// Reports the classifier's host state: how many hosts it keeps, and
    /// for each org whose hosts' context it dropped for a bound, a count
    /// and a warning naming the org.
    fn report_host_state(&mut self) {
        let (hosts, dropped) = self.judge.host_state();
        metrics::CLASSIFIER_HOSTS.set(hosts as i64);
        for d in dropped {
            let (bound, key) = match d.bound {
                HostBound::Org => (
                    metrics::HostStateBound::Org,
                    "scoring.classifier.max_hosts_per_org",
                ),
                HostBound::Total => (
                    metrics::HostStateBound::Total,
                    "scoring.classifier.max_hosts",
                ),
            };
            metrics::HOST_STATE_DROPPED.inc_by(bound, d.hosts as u64);
            tracing::warn!(
                org = d.org,
                dropped = d.hosts,
                limit = key,
                "org over a host-state bound: the classifier dropped its least recently seen hosts' context"
            );
        }
    }

    /// Unloads, for each org holding more than
    /// `limits.max_loaded_baselines_per_org` baselines, that org's least
    /// recently used down to 90% of it: an org with many or churning
    /// workloads (a workload per container) unloads its own, never the
    /// other orgs'.
    async fn evict_per_org(&mut self) {
        let max = self.cfg.limits.max_loaded_baselines_per_org;
        if self.judge.baselines.len() <= max {
            return; // no org can be over
        }
        let over = over_their_bound(self.loaded_by_use(), max);
        for (org, victims) in over {
            let n = victims.len();
            for key in victims {
                self.unload(&key).await;
                metrics::EVICTIONS.inc(metrics::EvictionBound::Org);
            }
            tracing::warn!(
                org,
                evicted = n,
                limit = max,
                "org over limits.max_loaded_baselines_per_org: unloaded its least recently used baselines"
            );
        }
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
    }

    /// The loaded baselines, each with the batch that last used it.
    fn loaded_by_use(&self) -> impl Iterator<Item = (u64, &WorkloadKey)> {
        self.judge
            .baselines
            .keys()
            .map(|k| (self.last_used.get(k).copied().unwrap_or(0), k))
    }

    /// Persists what a workload's baseline has not yet written and drops
    /// it, and everything held for it, from memory.
    async fn unload(&mut self, key: &WorkloadKey) {
        self.partition_of.remove(key);
        self.last_used.remove(key);
        self.judge.history.remove(key);
        if let Some(mut b) = self.judge.baselines.remove(key) {
            let rows = b.take_dirty();
            let job = PersistJob {
                unload: true,
                ..PersistJob::new(key.clone(), &mut b, rows)
            };
            if !job.is_empty() {
                *self
                    .unloading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key.clone())
                    .or_default() += 1;
                if self.persist.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    self.unloading
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(key);
                }
            }
        }
    }

    /// Hands learned (and forgotten) behaviour to the persister.
    /// Sends what is due to the persister: new and forgotten behaviour,
    /// and repeats whose write-back is due (`touch_interval_s`); with
    /// `full`, everything pending (at shutdown).
    async fn flush(&mut self, full: bool) {
        let touch_ns = self
            .cfg
            .baseline
            .touch_interval_s
            .saturating_mul(1_000_000_000);
        for (key, b) in &mut self.judge.baselines {
            if b.has_dirty() {
                let rows = if full {
                    b.take_dirty()
                } else {
                    b.take_dirty_due(touch_ns)
                };
                let job = PersistJob::new(key.clone(), b, rows);
                if job.is_empty() {
                    continue;
                }
                if self.persist.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    return;
                }
            }
        }
    }

    /// Persists and unloads the workloads of revoked partitions: their next
    /// owner loads them from LanceDB.
    async fn release(&mut self, revoked: &[(String, i32)]) {
        let gone: Vec<WorkloadKey> = self
            .partition_of
            .iter()
            .filter(|(_, tp)| revoked.contains(tp))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.unload(&key).await;
        }
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
    }

    /// Forgets behaviour older than the retention, in memory and (through
    /// the persister, which owns the writes) in LanceDB.
    async fn prune(&mut self) {
        let cutoff =
            now_ns().saturating_sub(self.cfg.baseline.retention_days * 86_400 * 1_000_000_000);
        for (key, b) in &mut self.judge.baselines {
            let n = b.prune(cutoff);
            if n > 0 {
                let (org, workload) = split_key(key);
                tracing::info!(org, workload, pruned = n, "pruned old behaviour");
                let job = PersistJob {
                    prune_before: Some(cutoff),
                    ..PersistJob::new(key.clone(), b, Vec::new())
                };
                if self.persist.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_org_over_its_bound_unloads_and_only_its_least_recently_used() {
        let mut loaded: Vec<(WorkloadKey, u64)> = (0..40u64)
            .map(|i| (workload_key("noisy", &format!("c-{i}")), 100 + i))
            .collect();
        // The quiet org's baselines are older than all of the noisy one's.
        loaded.extend((0..10u64).map(|i| (workload_key("quiet", &format!("w-{i}")), i)));
        let over = over_their_bound(loaded.iter().map(|(k, u)| (*u, k)), 20);
        assert_eq!(over.len(), 1, "{over:?}");
        let (org, victims) = &over[0];
        assert_eq!(org, "noisy");
        // Down to 90% of 20: the 22 least recently used of 40.
        let want: Vec<WorkloadKey> = (0..22u64)
            .map(|i| workload_key("noisy", &format!("c-{i}")))
            .collect();
        let mut got = victims.clone();
        got.sort_by_key(|k| k[k.find('-').unwrap() + 1..].parse::<u64>().unwrap());
        assert_eq!(got, want);
        assert!(over_their_bound(loaded.iter().map(|(k, u)| (*u, k)), 40).is_empty());
    }
}
