//! One reader of the alerts topic per indexer, fanned out to every
//! StreamAlerts subscriber.
//!
//! Invariants:
//! - The hub holds the indexer's only long-lived Kafka consumer of the
//!   alerts topic; a subscriber never holds one while it is live. Its
//!   position and its broadcast are updated under one lock, so a subscriber
//!   that snapshots the position and subscribes under that lock sees every
//!   record after the snapshot exactly once.
//! - A subscriber whose cursor is behind the hub (a resume, or a subscriber
//!   that fell behind the broadcast) reads the gap with a consumer of its
//!   own, up to the hub's position at that moment, then switches to the
//!   broadcast and drops what it already sent. Such catch-up readers are
//!   capped ([`MAX_CATCH_UPS`]); without one free, a lagging subscriber's
//!   stream ends with RESOURCE_EXHAUSTED and its last cursor resumes it
//!   without loss.
//! - Partitions added to the alerts topic are found within
//!   [`PARTITION_REFRESH`] and read from their beginning.
//! - Subscribers are capped ([`MAX_SUBSCRIBERS`]); the cursor handed out
//!   with each alert is the subscriber's own position (every partition),
//!   whatever it filtered out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outlier_common::kafka::KafkaConfig;
use outlier_proto::{AlertEnvelope, ScoredEvent, Verdict};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::metrics;

/// Most StreamAlerts subscribers served at once by one indexer.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Most subscribers reading a gap with a consumer of their own at once.
pub const MAX_CATCH_UPS: usize = 8;
/// How often the hub looks for partitions added to the alerts topic.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);
/// Records the broadcast keeps for a slow subscriber before it lags.
const BROADCAST_CAPACITY: usize = 4096;

/// One record of the alerts topic, as the hub read it.
#[derive(Debug)]
pub struct Record {
    partition: i32,
    offset: i64,
    /// `None` when the payload is not a scored event (counted, skipped).
    scored: Option<ScoredEvent>,
}

struct State {
    /// Next offset the hub will read, per partition; empty until ready.
    positions: BTreeMap<i32, i64>,
    tx: broadcast::Sender<Arc<Record>>,
}

/// The shared reader; cheap to clone.
#[derive(Clone)]
pub struct AlertHub {
    kafka: KafkaConfig,
    state: Arc<Mutex<State>>,
    ready: watch::Receiver<bool>,
    subscribers: Arc<Semaphore>,
    catch_ups: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// What a subscriber asked for.
pub struct Filter {
    pub org: String,
    pub workloads: Vec<String>,
    pub min: Verdict,
}

impl Filter {
    fn wants(&self, scored: &ScoredEvent) -> bool {
        let Some(event) = &scored.event else {
            return false;
        };
        event.org == self.org
            && (self.workloads.is_empty() || self.workloads.contains(&event.workload))
            && scored.verdict() as i32 >= self.min as i32
    }
}

pub type Encode = fn(&str, &BTreeMap<i32, i64>) -> String;

impl AlertHub {
    /// Starts the hub's reader; it positions itself at the end of every
    /// partition of the alerts topic once Kafka answers (retried).
    pub fn start(kafka: KafkaConfig, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (ready_tx, ready) = watch::channel(false);
        let hub = Self {
            kafka,
            state: Arc::new(Mutex::new(State {
                positions: BTreeMap::new(),
                tx,
            })),
            ready,
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            catch_ups: Arc::new(Semaphore::new(MAX_CATCH_UPS)),
            shutdown,
        };
        tokio::spawn(hub.clone().read(ready_tx));
        hub
    }

    async fn read(self, ready: watch::Sender<bool>) {
        let topic = self.kafka.topics.alerts.clone();
        let mut delay = Duration::from_millis(500);
        let consumer = loop {
            // Opening blocks (metadata and watermark requests, up to their
            // timeouts while Kafka is away): off the runtime's workers, or
            // every page and call scheduled on this one waits.
            let (hub, t) = (self.clone(), topic.clone());
            let opened = tokio::task::spawn_blocking(move || hub.open_at_end(&t))
                .await
                .unwrap_or_else(|e| Err(format!("alert hub: {e}")));
            match opened {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "alert hub: cannot read the alerts topic yet; retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        let consumer = Arc::new(consumer);
        let _ = ready.send(true);
        metrics::ALERT_READERS.inc();
        tracing::info!(topic, "alert hub reading");
        let mut failing = false;
        let mut refresh = tokio::time::interval(PARTITION_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let msg = tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = refresh.tick() => {
                    self.follow_new_partitions(&consumer, &topic).await;
                    continue;
                }
                m = consumer.recv() => m,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    // librdkafka reconnects by itself; the subscribers keep
                    // their streams and get what follows.
                    if !failing {
                        tracing::warn!(error = %e, "alert hub: read failed; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if failing {
                tracing::info!("alert hub reading again");
                failing = false;
            }
            let scored = msg.payload().and_then(|p| ScoredEvent::decode(p).ok());
            let record = Arc::new(Record {
                partition: msg.partition(),
                offset: msg.offset(),
                scored,
            });
            let mut st = self.state.lock().expect("alert hub lock");
            st.positions.insert(record.partition, record.offset + 1);
            // No receivers is not an error: nobody is streaming.
            let _ = st.tx.send(record);
        }
        metrics::ALERT_READERS.dec();
    }

    /// Partitions added to the topic since the hub started are read from
    /// their beginning (everything in them is newer than the hub's start):
    /// the consumer is assigned again at the hub's positions, which are
    /// those of the records already broadcast, so nothing is read twice or
    /// skipped. A failed lookup is retried at the next refresh.
    async fn follow_new_partitions(&self, consumer: &Arc<StreamConsumer>, topic: &str) {
        // Only this task changes the positions: the partitions known now
        // are those known when the lookup returns.
        let known: Vec<i32> = {
            let st = self.state.lock().expect("alert hub lock");
            st.positions.keys().copied().collect()
        };
        let (c, t) = (consumer.clone(), topic.to_string());
        // The lookup blocks (a metadata request, then a watermark request
        // for each new partition only).
        let found = tokio::task::spawn_blocking(move || {
            outlier_common::kafka::partitions(&c, &t)?
                .into_iter()
                .filter(|p| !known.contains(p))
                .map(|p| Ok((p, c.fetch_watermarks(&t, p, Duration::from_secs(10))?.0)))
                .collect::<Result<Vec<(i32, i64)>, rdkafka::error::KafkaError>>()
        })
        .await;
        let Ok(Ok(new)) = found else {
            return;
        };
        if new.is_empty() {
            return;
        }
        let mut st = self.state.lock().expect("alert hub lock");
        let mut positions = st.positions.clone();
        positions.extend(new.iter().copied());
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &positions {
            if tpl
                .add_partition_offset(topic, *p, Offset::Offset(*o))
                .is_err()
            {
                return;
            }
        }
        match consumer.assign(&tpl) {
            Ok(()) => {
                tracing::info!(topic, partitions = ?new.iter().map(|(p, _)| p).collect::<Vec<_>>(), "alert hub: reading partitions added to the topic");
                st.positions = positions;
            }
            Err(e) => tracing::warn!(error = %e, "alert hub: cannot follow new partitions yet"),
        }
    }

    /// A consumer assigned to every partition of `topic` at its end, and
    /// the hub's positions set to those ends.
    fn open_at_end(&self, topic: &str) -> Result<StreamConsumer, String> {
        let consumer = self.consumer("hub")?;
        let ends = ends(&consumer, topic)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &ends {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        self.state.lock().expect("alert hub lock").positions = ends;
        Ok(consumer)
    }

    /// A reader of its own (named under the indexer's `outlier-alert-stream`
    /// group prefix); no group offsets are committed.
    fn consumer(&self, role: &str) -> Result<StreamConsumer, String> {
        self.kafka
            .reader(&format!("outlier-alert-stream-{role}"))
            .map_err(|e| format!("kafka: {e}"))
    }

    /// Subscribes from `resume` (partitions it does not name: from now).
    /// Each envelope's cursor is made by `encode` from the subscriber's
    /// positions.
    pub async fn subscribe(
        &self,
        filter: Filter,
        resume: BTreeMap<i32, i64>,
        encode: Encode,
    ) -> Result<ReceiverStream<Result<AlertEnvelope, Status>>, Status> {
        let permit = self.subscribers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_SUBSCRIBERS} alert streams are open on this indexer; try another or later"
            ))
        })?;
        let mut ready = self.ready.clone();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .map_err(|_| Status::unavailable("the alerts topic cannot be read yet"))?
            .map_err(|_| Status::unavailable("the indexer is stopping"))?;
        let (rx, hub) = self.snapshot();
        let mut positions = hub.clone();
        for (p, o) in resume {
            if hub.contains_key(&p) {
                positions.insert(p, o);
            }
        }
        let behind = positions.iter().any(|(p, o)| *o < hub[p]);
        let catch_up = if behind {
            Some(self.catch_ups.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "{MAX_CATCH_UPS} alert streams are resuming on this indexer; try again shortly"
                ))
            })?)
        } else {
            None
        };
        let (tx, out) = mpsc::channel(256);
        let sub = Subscriber {
            hub: self.clone(),
            filter,
            positions,
            tx,
            encode,
        };
        metrics::ALERT_STREAMS.inc();
        tokio::spawn(async move {
            let _permit = permit;
            sub.run(rx, hub, catch_up).await;
            metrics::ALERT_STREAMS.dec();
        });
        Ok(ReceiverStream::new(out))
    }

    /// The broadcast, subscribed at the hub's current positions.
    fn snapshot(&self) -> (broadcast::Receiver<Arc<Record>>, BTreeMap<i32, i64>) {
        let st = self.state.lock().expect("alert hub lock");
        (st.tx.subscribe(), st.positions.clone())
    }
}

/// The end offset (high watermark) of every partition of `topic`.
fn ends(consumer: &StreamConsumer, topic: &str) -> Result<BTreeMap<i32, i64>, String> {
    outlier_common::kafka::partitions(consumer, topic)
        .map_err(|e| format!("kafka: topic {topic}: {e}"))?
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|e| format!("kafka: {e}"))?;
            Ok((p, high))
        })
        .collect()
}

struct Subscriber {
    hub: AlertHub,
    filter: Filter,
    positions: BTreeMap<i32, i64>,
    tx: mpsc::Sender<Result<AlertEnvelope, Status>>,
    encode: Encode,
}

enum End {
    /// The client went away or the indexer stops.
    Gone,
    /// Fell behind the broadcast by this many records.
    Lagged(u64),
}

impl Subscriber {
    async fn run(
        mut self,
        mut rx: broadcast::Receiver<Arc<Record>>,
        mut hub: BTreeMap<i32, i64>,
        mut catch_up: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        loop {
            if let Some(permit) = catch_up.take() {
                metrics::ALERT_READERS.inc();
                let caught = self.catch_up(&hub).await;
                metrics::ALERT_READERS.dec();
                drop(permit);
                if let Err(e) = caught {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
            match self.live(&mut rx).await {
                End::Gone => return,
                End::Lagged(n) => {
                    // Read the gap again with a reader of its own, if one
                    // is free; otherwise the client resumes by cursor.
                    let Ok(permit) = self.hub.catch_ups.clone().try_acquire_owned() else {
                        metrics::ALERT_STREAMS_LAGGED.inc();
                        let _ = self
                            .tx
                            .send(Err(Status::resource_exhausted(format!(
                                "this stream fell {n} alerts behind; resume with the last cursor"
                            ))))
                            .await;
                        return;
                    };
                    (rx, hub) = self.hub.snapshot();
                    catch_up = Some(permit);
                }
            }
        }
    }

    /// Sends `record` if the filter wants it; false when the client is gone.
    async fn deliver(&mut self, partition: i32, offset: i64, scored: Option<&ScoredEvent>) -> bool {
        self.positions.insert(partition, offset + 1);
        let Some(scored) = scored.filter(|s| self.filter.wants(s)) else {
            return true;
        };
        let envelope = AlertEnvelope {
            cursor: (self.encode)(&self.filter.org, &self.positions),
            event: Some(scored.clone()),
        };
        self.tx.send(Ok(envelope)).await.is_ok()
    }

    /// Reads from the subscriber's positions up to `until` (the hub's
    /// positions when it subscribed to the broadcast).
    async fn catch_up(&mut self, until: &BTreeMap<i32, i64>) -> Result<(), Status> {
        let topic = self.hub.kafka.topics.alerts.clone();
        let consumer = self.hub.consumer("catch-up").map_err(Status::unavailable)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.positions {
            if *o < until[p] {
                tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Status::unavailable(format!("kafka: {e}")))?;
        let done = |positions: &BTreeMap<i32, i64>| positions.iter().all(|(p, o)| *o >= until[p]);
        while !done(&self.positions) {
            let msg = tokio::select! {
                () = self.hub.shutdown.cancelled() => return Ok(()),
                () = self.tx.closed() => return Ok(()),
                m = tokio::time::timeout(Duration::from_millis(500), consumer.recv()) => m,
            };
            match msg {
                Ok(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    if o >= until[&p] {
                        // Past the gap: the broadcast has it.
                        self.positions.insert(p, self.positions[&p].max(until[&p]));
                        continue;
                    }
                    let scored = m.payload().and_then(|b| ScoredEvent::decode(b).ok());
                    if !self.deliver(p, o, scored.as_ref()).await {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => return Err(Status::unavailable(format!("kafka: {e}"))),
                Err(_) => {
                    // Nothing for a while: offsets the topic no longer
                    // holds or that hold no record (transaction markers)
                    // end the gap where the consumer's position has passed.
                    if let Ok(at) = consumer.position() {
                        for e in at.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                let mine = self.positions.entry(e.partition()).or_default();
                                *mine = (*mine).max(o.min(until[&e.partition()]));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Follows the broadcast until the client goes or the stream lags.
    async fn live(&mut self, rx: &mut broadcast::Receiver<Arc<Record>>) -> End {
        loop {
            let record = tokio::select! {
                () = self.hub.shutdown.cancelled() => return End::Gone,
                () = self.tx.closed() => return End::Gone,
                r = rx.recv() => r,
            };
            match record {
                Ok(r) => {
                    if r.offset < self.positions.get(&r.partition).copied().unwrap_or(0) {
                        continue; // sent while catching up
                    }
                    if !self.deliver(r.partition, r.offset, r.scored.as_ref()).await {
                        return End::Gone;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return End::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => return End::Gone,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::Event;

    fn scored(org: &str, workload: &str, verdict: Verdict) -> ScoredEvent {
        let mut s = ScoredEvent {
            event: Some(Event {
                org: org.into(),
                workload: workload.into(),
                ..Event::default()
            }),
            ..ScoredEvent::default()
        };
        s.set_verdict(verdict);
        s
    }

    #[test]
    fn the_filter_keeps_the_org_the_workloads_and_the_severity_asked_for() {
        let f = Filter {
            org: "a".into(),
            workloads: vec!["web".into()],
            min: Verdict::Alert,
        };
        assert!(f.wants(&scored("a", "web", Verdict::Alert)));
        assert!(!f.wants(&scored("b", "web", Verdict::Alert)));
        assert!(!f.wants(&scored("a", "db", Verdict::Alert)));
        assert!(!f.wants(&scored("a", "web", Verdict::Warn)));
        let any = Filter {
            org: "a".into(),
            workloads: vec![],
            min: Verdict::Warn,
        };
        assert!(any.wants(&scored("a", "db", Verdict::Warn)));
        assert!(!any.wants(&ScoredEvent::default()));
    }
}
