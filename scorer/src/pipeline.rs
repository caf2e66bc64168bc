//! The scorer's Kafka loop: consume a micro-batch, decode, score it on a
//! blocking thread, publish every result, and only then store the batch's
//! offsets (at-least-once). Undecodable records go to the dead-letter topic
//! with a reason. Learned behaviour is persisted to LanceDB in the
//! background, off the hot path.
//!
//! Baseline poisoning: after a workload's warm-up (`warmup_events`), an
//! event whose verdict is `alert` is not learned. It is learned only when an
//! operator confirms it benign with a [`Feedback`] record on the feedback
//! topic (keyed like the event and read co-partitioned with the events
//! topics, so it reaches the scorer that owns the workload); `malicious`
//! feedback removes a behaviour that was learned (say, during warm-up).
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

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesOrdered;
use outlier_classifier::{Assessment, Classifier};
use outlier_common::featurize::embed;
use outlier_common::kafka::{self, DLQ_MAX_PAYLOAD, Topics};
use outlier_common::names;
use outlier_common::now_ns;
use outlier_common::retry::{self, Attempt, Failure, RetryPolicy};
use outlier_common::telemetry::{self, Health};
use outlier_proto::{
    Contribution, Event, Feedback, FeedbackLabel, Heartbeat, ScoredEvent, Verdict,
};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::baseline::{Baseline, Behaviour};
use crate::config::{DecisionMode, ScorerConfig, ScoringConfig};
use crate::metrics;
use crate::score;
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
}

/// Identifies a workload's baseline: `org\0workload` (names cannot contain
/// control characters, so the pair is unambiguous).
pub type WorkloadKey = String;

pub fn workload_key(org: &str, workload: &str) -> WorkloadKey {
    let mut k = String::with_capacity(org.len() + workload.len() + 1);
    k.push_str(org);
    k.push('\0');
    k.push_str(workload);
    k
}

fn split_key(k: &str) -> (&str, &str) {
    k.split_once('\0').unwrap_or((k, ""))
}

/// A record to publish: scored events, alerts and dead letters.
struct OutRecord {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// A batch's delivery to Kafka: yields its offsets once every record is
/// acknowledged, `None` if shutdown came first.
type Delivery = std::pin::Pin<Box<dyn Future<Output = Option<kafka::Offsets>> + Send>>;

/// Workloads unloaded from memory whose last writes the persister has not
/// finished: their baseline is not loaded again until it has (or it would
/// load without them).
type Unloading = Arc<std::sync::Mutex<HashMap<WorkloadKey, u32>>>;

struct PersistJob {
    /// Set when the job carries an unloaded baseline's last writes.
    unload: bool,
    key: WorkloadKey,
    rows: Vec<Behaviour>,
    deletes: Vec<u64>,
    /// Behaviours last seen before this are dropped from storage.
    prune_before: Option<u64>,
}

impl PersistJob {
    fn new(key: WorkloadKey, b: &mut Baseline, rows: Vec<Behaviour>) -> Self {
        Self {
            unload: false,
            key,
            rows,
            deletes: b.take_forgotten(),
            prune_before: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.deletes.is_empty() && self.prune_before.is_none()
    }
}

/// What a consumed record turned out to be.
pub enum Input {
    Event(Event),
    Feedback(Feedback),
    /// A collector's heartbeat, its org checked: forwarded as is.
    Heartbeat(Heartbeat),
}

/// What became of a consumed record.
pub enum Outcome {
    Scored(Box<ScoredEvent>),
    /// Feedback applied to a baseline; nothing to publish.
    Applied,
    /// A heartbeat to forward to the heartbeats topic.
    Heartbeat(Heartbeat),
    Dead(DeadLetter),
}

/// A record that could not be used.
pub struct DeadLetter {
    pub reason: String,
    pub label: &'static str,
}

/// Runs the scorer until `shutdown` fires, then drains: the batch in hand is
/// finished, learned behaviour is persisted, offsets are committed.
pub async fn run(cfg: ScorerConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let classifier =
        crate::threat::classifier(&cfg.scoring.classifier).map_err(RunError::Classifier)?;
    let health = Health::new(&["kafka", "lancedb"]);
    telemetry::serve_http(cfg.http_addr, health.clone(), shutdown.clone()).await?;

    let store = Arc::new(Store::open(&cfg.baseline.uri).await?);
    health.set("lancedb", true, format!("open at {}", cfg.baseline.uri));

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
        judge: Judge {
            signatures,
            ..Judge::new(cfg.scoring.clone(), cfg.baseline.warmup_events, classifier)
        },
        partition_of: HashMap::new(),
        last_used: HashMap::new(),
        batches: 0,
        poisoned: HashMap::new(),
        unloading,
        suppressions,
    };
    let mut flush_tick = tokio::time::interval(Duration::from_millis(
        cfg.baseline.flush_interval_ms.max(10),
    ));
    let mut prune_tick = tokio::time::interval(Duration::from_secs(3600));
    kafka::spawn_health_probe(cfg.kafka.clone(), health.clone(), shutdown.clone());
    let max_wait = Duration::from_millis(cfg.batch.max_wait_ms);

    // Deliveries in flight, oldest first: a batch's offsets are stored
    // when it and every batch before it are acknowledged, so scoring the
    // next batch overlaps with waiting for Kafka, and at-least-once holds.
    let mut inflight: FuturesOrdered<Delivery> = FuturesOrdered::new();
    let max_inflight = cfg.batch.max_inflight.max(1);

    let result = loop {
        let revoked = consumer.context().take_revoked();
        if !revoked.is_empty() {
            // Finish what is in flight first: its offsets are stored before
            // the revoked partitions' offsets are committed.
            if !kafka::finish_in_order(&mut inflight, &consumer).await {
                break Ok(());
            }
            worker.release(&revoked, &persist_tx).await;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Some(offsets) => kafka::store_offsets(&consumer, &offsets),
                None => break Ok(()), // shut down before it was acknowledged
            },
            _ = flush_tick.tick() => {
                worker.flush(&persist_tx, false).await;
                worker.evict(&persist_tx).await;
            }
            _ = prune_tick.tick() => worker.prune(&persist_tx).await,
            first = consumer.recv(), if inflight.len() < max_inflight => {
                let first = match first {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let batch = kafka::fill_batch(&consumer, first, cfg.batch.max_events, max_wait).await;
                match worker.process(batch).await {
                    Ok(Some(delivery)) => inflight.push_back(delivery),
                    Ok(None) => break Ok(()), // shut down mid-batch: offsets not stored
                    Err(e) => break Err(e),
                }
            }
        }
    };
    // What was scored is delivered (or, at shutdown, given up on and
    // redone by the next owner: its offsets are not stored).
    kafka::finish_in_order(&mut inflight, &consumer).await;

    worker.flush(&persist_tx, true).await;
    drop(persist_tx);
    if persister.await.is_err() {
        tracing::error!("baseline persister panicked");
    }
    kafka::commit_stored(&consumer);
    tracing::info!("scorer stopped");
    result
}

/// Persists learned behaviour in the background; retries a failed write
/// with backoff so learned behaviour is not dropped while LanceDB is away.
/// A write that keeps failing while LanceDB answers (or that LanceDB
/// refuses outright) is given up after the poison budget, logged and
/// counted: one workload's table cannot hold every other workload's
/// writes behind it.
async fn persist_loop(
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
                metrics::PERSIST.with_label_values(&["error"]).inc();
                health.set("lancedb", false, e.to_string());
                tracing::error!(org, workload, error = %e, retry_in_ms = delay.as_millis() as u64, "baseline write failed");
            },
        )
        .await;
        match attempt {
            Attempt::Done(()) => health.set("lancedb", true, "writes succeed"),
            Attempt::Poison(e) => {
                metrics::POISON.with_label_values(&["persist"]).inc();
                let rows = job.lock().await.rows.len();
                tracing::error!(org, workload, rows, error = %e, "baseline write given up: it fails while LanceDB answers");
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
        metrics::PERSIST
            .with_label_values(&["ok"])
            .inc_by(j.rows.len() as u64);
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

/// Sends records and waits until Kafka has acknowledged all of them,
/// re-sending failures with backoff. `false` if shutdown came first. A
/// record the broker refuses for itself (too large, invalid) is poison: it
/// is replaced by a truncated copy on the dead-letter topic with the
/// reason, and a dead-letter copy that is refused too is dropped and
/// counted, so no record holds its partition.
async fn deliver(
    producer: &FutureProducer,
    health: &Health,
    shutdown: &CancellationToken,
    mut records: Vec<OutRecord>,
    deadletter_topic: &str,
) -> bool {
    let mut todo: Vec<usize> = (0..records.len()).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        let mut futures: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(todo.len());
        let mut failed = Vec::new();
        let mut poison = Vec::new();
        for &i in &todo {
            let OutRecord {
                topic,
                key,
                payload,
                headers,
            } = &records[i];
            loop {
                let mut rec = FutureRecord::to(topic).key(key).payload(payload);
                if let Some(h) = headers {
                    rec = rec.headers(h.clone());
                }
                match producer.send_result(rec) {
                    Ok(f) => {
                        futures.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        tracing::error!(topic = %topic, error = %e, "cannot queue record");
                        if kafka::failure(&e) == Failure::Poison {
                            poison.push((i, e.to_string()));
                        } else {
                            failed.push(i);
                        }
                        break;
                    }
                }
            }
        }
        let (idx, futs): (Vec<usize>, Vec<DeliveryFuture>) = futures.into_iter().unzip();
        for (i, res) in idx.into_iter().zip(join_all(futs).await) {
            match res {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    tracing::warn!(error = %e, "delivery failed");
                    if kafka::failure(&e) == Failure::Poison {
                        poison.push((i, e.to_string()));
                    } else {
                        failed.push(i);
                    }
                }
                Err(_) => failed.push(i),
            }
        }
        for (i, reason) in poison {
            metrics::POISON.with_label_values(&["produce"]).inc();
            let r = &records[i];
            if r.topic == deadletter_topic {
                tracing::error!(topic = %r.topic, bytes = r.payload.len(), error = %reason, "dead-letter copy refused by Kafka; dropped");
                continue;
            }
            tracing::error!(topic = %r.topic, bytes = r.payload.len(), error = %reason, "record refused by Kafka; sent truncated to the dead-letter topic");
            let payload = r.payload[..r.payload.len().min(DLQ_MAX_PAYLOAD)].to_vec();
            let reason = format!("refused by Kafka on {}: {reason}", r.topic);
            let headers = kafka::dead_letter_headers(&reason, &r.topic);
            records[i] = OutRecord {
                topic: deadletter_topic.to_string(),
                key: r.key.clone(),
                payload,
                headers: Some(headers),
            };
            failed.push(i);
        }
        if failed.is_empty() {
            return true;
        }
        metrics::PRODUCE_RETRIES.inc_by(failed.len() as u64);
        health.set(
            "kafka",
            false,
            format!("{} records not acknowledged", failed.len()),
        );
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
        todo = failed;
    }
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
}

/// How long a workload whose baseline could not be loaded is dead-lettered
/// without trying again.
const POISON_TTL: Duration = Duration::from_secs(300);

/// Most workloads remembered as poisoned.
const POISONED_MAX: usize = 10_000;

/// An org named on an org's own topic must be that org.
fn check_topic_org(topics: &Topics, topic: &str, org: &str) -> Result<(), DeadLetter> {
    match topics.org_of_events_topic(topic) {
        Some(owner) if owner != org => Err(DeadLetter {
            reason: format!("event of org `{org}` on org `{owner}`'s topic {topic}"),
            label: "org_mismatch",
        }),
        _ => Ok(()),
    }
}

fn check_names(pairs: [(&'static str, &str); 2]) -> Result<(), DeadLetter> {
    for (field, value) in pairs {
        names::validate(field, value).map_err(|e| DeadLetter {
            reason: e.to_string(),
            label: "invalid_name",
        })?;
    }
    Ok(())
}

fn check_event(event: &Event) -> Result<(), DeadLetter> {
    check_names([("org", &event.org), ("workload", &event.workload)])?;
    if event.detail.is_none() {
        return Err(DeadLetter {
            reason: "event has no exec, connect or open detail".into(),
            label: "no_detail",
        });
    }
    Ok(())
}

/// Decodes a record of an events topic or of the feedback topic; records
/// over `max_bytes` are refused (their scored copies must fit the topics),
/// and so is an event on another org's topic.
pub fn decode(msg: &OwnedMessage, topics: &Topics, max_bytes: usize) -> Result<Input, DeadLetter> {
    let payload = msg.payload().ok_or(DeadLetter {
        reason: "empty record".into(),
        label: "empty",
    })?;
    if payload.len() > max_bytes {
        return Err(DeadLetter {
            reason: format!(
                "record of {} bytes is over limits.max_event_bytes ({max_bytes})",
                payload.len()
            ),
            label: "oversize",
        });
    }
    if msg.topic() == topics.feedback {
        let fb = Feedback::decode(payload).map_err(|e| DeadLetter {
            reason: format!("not an outlier.v1.Feedback: {e}"),
            label: "decode",
        })?;
        let event = fb.event.as_ref().ok_or(DeadLetter {
            reason: "feedback without an event".into(),
            label: "no_detail",
        })?;
        check_event(event)?;
        if fb.label() == FeedbackLabel::Unspecified {
            return Err(DeadLetter {
                reason: "feedback without a label".into(),
                label: "no_label",
            });
        }
        return Ok(Input::Feedback(fb));
    }
    match kafka::record_kind(msg) {
        None => {}
        Some(k) if k == kafka::HEARTBEAT_KIND.as_bytes() => {
            let h = Heartbeat::decode(payload).map_err(|e| DeadLetter {
                reason: format!("not an outlier.v1.Heartbeat: {e}"),
                label: "decode",
            })?;
            check_names([("org", &h.org), ("host", &h.host)])?;
            check_topic_org(topics, msg.topic(), &h.org)?;
            return Ok(Input::Heartbeat(h));
        }
        // Whoever may write events may not teach baselines.
        Some(_) => {
            return Err(DeadLetter {
                reason: format!(
                    "feedback on an events topic is refused; operators publish it to {}",
                    topics.feedback
                ),
                label: "feedback_on_events",
            });
        }
    }
    let event = Event::decode(payload).map_err(|e| DeadLetter {
        reason: format!("not an outlier.v1.Event: {e}"),
        label: "decode",
    })?;
    check_event(&event)?;
    check_topic_org(topics, msg.topic(), &event.org)?;
    Ok(Input::Event(event))
}

impl Worker<'_> {
    /// Scores one batch and hands its records to the producer. Returns the
    /// batch's delivery (which yields the offsets to store once Kafka
    /// acknowledged every record), or `None` when shutdown interrupted the
    /// batch before it was scored.
    async fn process(&mut self, batch: Vec<OwnedMessage>) -> Result<Option<Delivery>, RunError> {
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
        for key in needed {
            match self.load(&key).await {
                None => return Ok(None),
                Some(Ok(b)) => {
                    self.judge.baselines.insert(key, b);
                }
                Some(Err(reason)) => {
                    if self.poisoned.len() >= POISONED_MAX {
                        self.poisoned.clear();
                    }
                    self.last_used.remove(&key);
                    self.partition_of.remove(&key);
                    self.poisoned.insert(key, (reason, Instant::now()));
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
                        label: "poison_baseline",
                    });
                }
            }
        }
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
        metrics::STAGE_SECONDS
            .with_label_values(&["load"])
            .observe(t.elapsed().as_secs_f64());

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
        metrics::STAGE_SECONDS
            .with_label_values(&["score"])
            .observe(t.elapsed().as_secs_f64());

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
                    metrics::EVENTS.with_label_values(&[verdict.label()]).inc();
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
                Outcome::Applied => metrics::EVENTS.with_label_values(&["feedback"]).inc(),
                Outcome::Heartbeat(h) => {
                    metrics::EVENTS.with_label_values(&["heartbeat"]).inc();
                    records.push(OutRecord {
                        topic: topics.heartbeats.clone(),
                        key: h.partition_key().into_bytes(),
                        payload: h.encode_to_vec(),
                        headers: None,
                    });
                }
                Outcome::Dead(dl) => {
                    metrics::EVENTS.with_label_values(&["deadletter"]).inc();
                    metrics::DEADLETTER.with_label_values(&[dl.label]).inc();
                    tracing::warn!(
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        reason = %dl.reason, "record sent to dead-letter topic"
                    );
                    let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
                    let headers = kafka::dead_letter_headers(&dl.reason, &source);
                    let payload = msg.payload().unwrap_or_default();
                    let payload = payload[..payload.len().min(DLQ_MAX_PAYLOAD)].to_vec();
                    records.push(OutRecord {
                        topic: topics.deadletter.clone(),
                        key,
                        payload,
                        headers: Some(headers),
                    });
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
            metrics::STAGE_SECONDS
                .with_label_values(&["produce"])
                .observe(t.elapsed().as_secs_f64());
            Some(offsets)
        })))
    }

    /// Loads a baseline, retrying while LanceDB is away; `None` on
    /// shutdown, `Some(Err(reason))` when it cannot be loaded while LanceDB
    /// answers (poison: its records are dead-lettered).
    async fn load(&self, key: &str) -> Option<Result<Baseline, String>> {
        // An unloaded baseline's last writes land first.
        while self
            .unloading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
        {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        let (org, workload) = split_key(key);
        let cutoff =
            now_ns().saturating_sub(self.cfg.baseline.retention_days * 86_400 * 1_000_000_000);
        let attempt = retry::retry(
            self.cfg.limits.retry_policy(),
            self.shutdown,
            || {
                self.store
                    .load(org, workload, cutoff, self.cfg.baseline.index_params())
            },
            StoreError::failure,
            || self.store.probe(),
            |e, delay| {
                self.health.set("lancedb", false, e.to_string());
                tracing::error!(org, workload, error = %e, retry_in_ms = delay.as_millis() as u64, "baseline load failed");
            },
        )
        .await;
        match attempt {
            Attempt::Done(b) => {
                self.health.set("lancedb", true, "loads succeed");
                tracing::debug!(org, workload, behaviours = b.len(), "baseline loaded");
                Some(Ok(b))
            }
            Attempt::Poison(e) => {
                metrics::POISON.with_label_values(&["load"]).inc();
                tracing::error!(org, workload, error = %e, ttl_s = POISON_TTL.as_secs(), "baseline cannot be loaded while LanceDB answers; the workload's records are dead-lettered");
                Some(Err(e.to_string()))
            }
            Attempt::Shutdown => None,
        }
    }

    /// Persists and unloads the least recently used baselines beyond
    /// `limits.max_loaded_baselines` (down to 90% of it, so eviction runs
    /// in rounds, not at every batch). They load again from LanceDB when
    /// their workload reports; their in-memory adaptation history starts
    /// over.
    async fn evict(&mut self, tx: &mpsc::Sender<PersistJob>) {
        let max = self.cfg.limits.max_loaded_baselines;
        if self.judge.baselines.len() <= max {
            return;
        }
        let target = max - max / 10;
        let mut by_age: Vec<(u64, WorkloadKey)> = self
            .judge
            .baselines
            .keys()
            .map(|k| (self.last_used.get(k).copied().unwrap_or(0), k.clone()))
            .collect();
        by_age.sort_unstable();
        let n = self.judge.baselines.len() - target;
        for (_, key) in by_age.into_iter().take(n) {
            self.unload(&key, tx).await;
            metrics::EVICTIONS.inc();
        }
        tracing::info!(
            evicted = n,
            loaded = self.judge.baselines.len(),
            limit = max,
            "unloaded idle baselines (limits.max_loaded_baselines)"
        );
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
    }

    /// Persists what a workload's baseline has not yet written and drops
    /// it, and everything held for it, from memory.
    async fn unload(&mut self, key: &WorkloadKey, tx: &mpsc::Sender<PersistJob>) {
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
                if tx.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    self.unloading
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(key);
                }
            }
        }
        let (org, workload) = split_key(key);
        self.store.forget(org, workload).await;
    }

    /// Hands learned (and forgotten) behaviour to the persister.
    /// Sends what is due to the persister: new and forgotten behaviour,
    /// and repeats whose write-back is due (`touch_interval_s`); with
    /// `full`, everything pending (at shutdown).
    async fn flush(&mut self, tx: &mpsc::Sender<PersistJob>, full: bool) {
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
                if tx.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    return;
                }
            }
        }
    }

    /// Persists and unloads the workloads of revoked partitions: their next
    /// owner loads them from LanceDB.
    async fn release(&mut self, revoked: &[(String, i32)], tx: &mpsc::Sender<PersistJob>) {
        let gone: Vec<WorkloadKey> = self
            .partition_of
            .iter()
            .filter(|(_, tp)| revoked.contains(tp))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.unload(&key, tx).await;
        }
        metrics::WORKLOADS.set(self.judge.baselines.len() as i64);
    }

    /// Forgets behaviour older than the retention, in memory and (through
    /// the persister, which owns the writes) in LanceDB.
    async fn prune(&mut self, tx: &mpsc::Sender<PersistJob>) {
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
                if tx.send(job).await.is_err() {
                    tracing::error!("baseline persister is gone");
                    return;
                }
            }
        }
    }
}

/// Judges events: the workloads' baselines, the threat classifier with its
/// per-host state, and the settings that combine them. Owned by one worker;
/// moved onto a blocking thread for each batch.
#[derive(Default)]
pub struct Judge {
    pub baselines: HashMap<WorkloadKey, Baseline>,
    /// Per workload: the classifier's log-odds over what it learned and
    /// the lineages it showed (see `score::WorkloadHistory`).
    pub history: HashMap<WorkloadKey, score::WorkloadHistory>,
    pub classifier: Option<Classifier>,
    pub scoring: ScoringConfig,
    /// Events a workload learns unconditionally (see `BaselineConfig`).
    pub warmup_events: u64,
    /// The fleet's immune memory: behaviours confirmed malicious anywhere
    /// in an org alert on every host of it.
    pub signatures: outlier_common::immune::Signatures,
}

impl Judge {
    pub fn new(scoring: ScoringConfig, warmup_events: u64, classifier: Option<Classifier>) -> Self {
        Self {
            baselines: HashMap::new(),
            history: HashMap::new(),
            classifier,
            scoring,
            warmup_events,
            signatures: Default::default(),
        }
    }

    /// Scores one event against its workload's baseline, classifies it,
    /// combines both into the verdict, and learns the behaviour unless the
    /// event alerted after warm-up. This is the whole per-event hot path.
    pub fn score(&mut self, event: Event) -> ScoredEvent {
        self.score_detailed(event).0
    }

    /// [`Judge::score`], with the evidence the verdict was decided on.
    pub fn score_detailed(&mut self, event: Event) -> (ScoredEvent, score::Signals) {
        let key = workload_key(&event.org, &event.workload);
        if !self.history.contains_key(&key) {
            self.history
                .insert(key.clone(), score::WorkloadHistory::default());
        }
        let history = self.history.get_mut(&key).expect("inserted above");
        let lineage = outlier_common::featurize::lineage_key(&event);
        let baseline = self.baselines.entry(key).or_default();
        let v = embed(&event);
        let bkey = outlier_common::featurize::behaviour_key(&v);
        let t = self.scoring.thresholds_for(&event.org, &event.workload);
        let j = score::judge_keyed(baseline, &v, bkey, t);
        let mut explanation = score::explain(&j, &event.workload);
        let mut verdict = j.verdict;
        let mut threat = None;
        // Immune memory: confirmed malicious somewhere in the org.
        let signature = self.signatures.matching(&event, &v, now_ns());
        let mut signals = score::Signals {
            anomaly: j.score,
            nearest_distance: j.nearest_distance,
            nearest_count: j.nearest_count,
            baseline_events: baseline.events(),
            p_malicious: 0.0,
            high_precision: None,
            workload_offset: 0.0,
            p_decision: 0.0,
            new_lineage: history.is_new_lineage(lineage, self.scoring.decision.adapt_min_events),
        };
        if let Some(c) = self.classifier.as_mut() {
            let (features, p) = c.classify(&event);
            signals.p_malicious = p.p_malicious;
            signals.high_precision = outlier_classifier::high_precision(&features);
            let meta = &c.model().meta;
            let cc = &self.scoring.classifier;
            let d = &self.scoring.decision;
            let warn = t.classifier_warn.unwrap_or(meta.warn_threshold);
            let alert = t.classifier_alert.unwrap_or(meta.alert_threshold);
            signals.workload_offset = history
                .log_odds
                .offset(d.adapt_quantile, d.adapt_min_events);
            verdict = match d.mode {
                DecisionMode::Calibrated => {
                    let (pd, v) = score::decide(
                        &signals,
                        d,
                        t.decision_warn.unwrap_or(d.warn),
                        t.decision_alert.unwrap_or(d.alert),
                    );
                    signals.p_decision = pd;
                    // Until the workload's history is long enough to say
                    // what is ordinary for it, novelty alone still warns
                    // and alerts as in the seed's design.
                    if history.watched() < d.adapt_min_events && j.verdict as i32 > v as i32 {
                        j.verdict
                    } else {
                        v
                    }
                }
                DecisionMode::Max => score::combine(
                    j.verdict,
                    j.score,
                    p.p_malicious,
                    warn,
                    alert,
                    cc.known_below,
                ),
            };
            if signature.is_some() {
                verdict = Verdict::Alert;
            }
            // SHAP explanations cost ~10x the classification: computed for
            // what is flagged (by either side) or what the classifier
            // itself would flag, not for every event leaning malicious.
            // A flagged event is always given a tactic and technique, from
            // its evidence, whatever the classifier's own call.
            let flagged = matches!(verdict, Verdict::Warn | Verdict::Alert);
            let a = if flagged || p.p_malicious >= warn {
                c.explain(&features, &p, cc.explain_top)
            } else {
                c.assess(&p)
            };
            metrics::THREATS
                .with_label_values(&[a.category.as_str()])
                .inc();
            threat = Some(a);
        }
        if let Some(m) = &signature {
            verdict = Verdict::Alert;
            metrics::SIGNATURE_MATCHES.inc();
            explanation = format!(
                "matches fleet signature {} (confirmed malicious on {}: {}; {}); {explanation}",
                m.signature_id, m.host, m.summary, m.reason
            );
        }
        // What matches a signature is never learned, even in warm-up.
        let learned = signature.is_none()
            && (verdict != Verdict::Alert || baseline.events() < self.warmup_events);
        if learned {
            baseline.observe_keyed(&v, bkey, event.ts_ns);
            history.learn(
                lineage,
                self.classifier
                    .is_some()
                    .then(|| score::logit(signals.p_malicious)),
            );
        }
        if let Some(a) = threat.as_ref().filter(|a| !a.explanation.is_empty()) {
            explanation.push_str("; ");
            if a.category == "benign" {
                explanation.push_str("malicious-looking (below the classifier's threshold): ");
            } else {
                explanation.push_str(&format!("{} ({:.0}%): ", a.category, 100.0 * a.confidence));
            }
            explanation.push_str(&a.explanation);
        }
        if !learned {
            explanation.push_str("; not learned until confirmed benign");
        }
        let mut threat = threat.unwrap_or_else(|| Assessment {
            category: String::new(),
            tactic: String::new(),
            technique: String::new(),
            confidence: 0.0,
            p_malicious: 0.0,
            contributions: Vec::new(),
            explanation: String::new(),
        });
        if let Some(m) = &signature
            && threat.tactic.is_empty()
        {
            threat.tactic = m.tactic.clone();
            threat.technique = m.technique.clone();
        }
        let scored = ScoredEvent {
            signature_id: signature.map(|m| m.signature_id).unwrap_or_default(),
            anomaly_score: j.score,
            nearest_distance: j.nearest_distance,
            threat_category: threat.category,
            tactic: threat.tactic,
            technique: threat.technique,
            confidence: threat.confidence,
            verdict: verdict as i32,
            explanation,
            contributions: threat
                .contributions
                .into_iter()
                .map(|c| Contribution {
                    feature: c.feature,
                    value: f64::from(c.value),
                    shap: f64::from(c.shap),
                    sentence: c.sentence,
                })
                .collect(),
            scored_at_ns: now_ns(),
            scorer_version: outlier_common::VERSION.to_string(),
            baseline_size: j.baseline_size as u64,
            learned,
            behaviour_key: bkey,
            event: Some(event),
            // Set when publishing, from the operators' current rules.
            suppressed_by: String::new(),
        };
        (scored, signals)
    }

    /// Applies an operator's verdict to the workload's baseline.
    pub fn feedback(&mut self, fb: &Feedback) {
        let Some(event) = &fb.event else { return };
        let baseline = self
            .baselines
            .entry(workload_key(&event.org, &event.workload))
            .or_default();
        let v = embed(event);
        match fb.label() {
            FeedbackLabel::Benign => {
                // Seen now, as far as retention goes: the confirmation is recent.
                baseline.observe(&v, event.ts_ns.max(fb.ts_ns));
                tracing::info!(org = %event.org, workload = %event.workload, event_id = %event.event_id, actor = %fb.actor, "behaviour confirmed benign: learned");
            }
            FeedbackLabel::Malicious => {
                let removed = baseline.forget(&v);
                tracing::info!(org = %event.org, workload = %event.workload, event_id = %event.event_id, actor = %fb.actor, removed, "behaviour confirmed malicious: forgotten");
            }
            FeedbackLabel::Unspecified => {}
        }
    }

    /// Scores a batch in order.
    pub fn score_batch(&mut self, inputs: Vec<Result<Input, DeadLetter>>) -> Vec<Outcome> {
        inputs
            .into_iter()
            .map(|input| match input {
                Ok(Input::Event(e)) => Outcome::Scored(Box::new(self.score(e))),
                Ok(Input::Feedback(fb)) => {
                    self.feedback(&fb);
                    Outcome::Applied
                }
                Ok(Input::Heartbeat(h)) => Outcome::Heartbeat(h),
                Err(dl) => Outcome::Dead(dl),
            })
            .collect()
    }
}
