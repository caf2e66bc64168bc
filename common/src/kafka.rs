//! Kafka client set-up shared by the binaries: topic names, producer and
//! consumer settings that make delivery at-least-once, and a start-up wait
//! that retries with backoff when the broker is not there yet.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Connection settings and topic names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    pub topics: Topics,
    /// Extra librdkafka properties (security.protocol, sasl.*, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_string(),
            topics: Topics::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// The pipeline's topics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Raw events from collectors, keyed by org/workload.
    pub events: String,
    /// Every scored event.
    pub scored: String,
    /// Scored events whose verdict is warn or alert.
    pub alerts: String,
    /// Records that could not be decoded, with the reason in a header.
    pub deadletter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: "outlier.events.v1".to_string(),
            scored: "outlier.scored.v1".to_string(),
            alerts: "outlier.alerts.v1".to_string(),
            deadletter: "outlier.deadletter.v1".to_string(),
        }
    }
}

/// Header naming what a record on the events topic holds when it is not an
/// event: `feedback` (an `outlier.v1.Feedback`).
pub const RECORD_KIND_HEADER: &str = "outlier-record";

/// Header carrying the reason a record went to the dead-letter topic.
pub const DLQ_REASON_HEADER: &str = "outlier-dlq-reason";
/// Header naming the topic/partition/offset a dead-lettered record came from.
pub const DLQ_SOURCE_HEADER: &str = "outlier-dlq-source";

/// Most bytes of a record's payload kept in its dead-letter copy.
pub const DLQ_MAX_PAYLOAD: usize = 64 * 1024;

/// The headers of a dead-letter copy: why, and where it came from.
pub fn dead_letter_headers(reason: &str, source: &str) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::Header;
    rdkafka::message::OwnedHeaders::new()
        .insert(Header {
            key: DLQ_REASON_HEADER,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: DLQ_SOURCE_HEADER,
            value: Some(source.as_bytes()),
        })
}

impl KafkaConfig {
    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("socket.keepalive.enable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Producer settings: idempotent and acks=all, so a retried send never
    /// duplicates or reorders and an acknowledged record survives a broker.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // Fewer, larger requests: the broker's cost is per request,
            // and 20 ms is small against the pipeline's latency budget.
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "300000");
        // User properties win over our defaults.
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Consumer settings for at-least-once processing: offsets are stored by
    /// the application only after the result is safely downstream, and only
    /// stored offsets are committed.
    pub fn consumer_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            // Under load, wait for 64 KiB (or 50 ms) per fetch instead of
            // asking the broker for every few records.
            .set("fetch.min.bytes", "65536")
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Fetches cluster metadata once; the error says which brokers failed.
    pub fn probe(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let consumer: BaseConsumer = self.base("outlier-probe").create()?;
        let md = consumer.fetch_metadata(None, timeout)?;
        Ok(md.brokers().len())
    }

    /// Waits until the brokers answer, retrying with exponential backoff
    /// (capped at 30 s) and logging each failure. Returns `false` if
    /// `shutdown` fired first.
    pub async fn wait_until_reachable(&self, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(250);
        loop {
            let cfg = self.clone();
            let res = tokio::task::spawn_blocking(move || cfg.probe(Duration::from_secs(5))).await;
            match res {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => tracing::warn!(
                    brokers = %self.brokers,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "kafka unreachable"
                ),
                Err(e) => tracing::error!(error = %e, "kafka probe task failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Creates the given topics if they do not exist.
    pub async fn ensure_topics(&self, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base("outlier-admin").create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, error = %code, "topic creation failed");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

/// Whether a produce error is the record's own (the broker will never take
/// it: too large, invalid) or may pass (brokers away, timeouts, queue full).
pub fn failure(e: &KafkaError) -> crate::retry::Failure {
    use crate::retry::Failure;
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord,
        ) => Failure::Poison,
        _ => Failure::Retriable,
    }
}

/// Probes the brokers every 10 s and sets the `kafka` health check from
/// the answer, so the check recovers when Kafka does (the client context
/// only reports it lost).
pub fn spawn_health_probe(
    kafka: KafkaConfig,
    health: crate::telemetry::Health,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let k = kafka.clone();
            match tokio::task::spawn_blocking(move || k.probe(Duration::from_secs(5))).await {
                Ok(Ok(_)) => health.set("kafka", true, format!("reachable at {}", kafka.brokers)),
                Ok(Err(e)) => health.set("kafka", false, e.to_string()),
                Err(_) => {}
            }
        }
    });
}

/// Consumer context for at-least-once consumers: logs rebalances, commits
/// stored offsets synchronously before partitions are taken away (so the next
/// owner starts exactly after what this one finished), and marks the `kafka`
/// health check down when the brokers are lost.
pub struct CommitOnRevoke {
    pub health: crate::telemetry::Health,
    /// Partitions revoked since the owner last drained the list.
    pub revoked: std::sync::Arc<std::sync::Mutex<Vec<(String, i32)>>>,
}

impl CommitOnRevoke {
    pub fn new(health: crate::telemetry::Health) -> Self {
        Self {
            health,
            revoked: Default::default(),
        }
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl rdkafka::ClientContext for CommitOnRevoke {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.health.set("kafka", false, reason.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                commit_stored(consumer);
                let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                revoked.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Commits the stored offsets synchronously; "nothing to commit" is fine.
pub fn commit_stored<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C) {
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        && !matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset))
    {
        tracing::warn!(error = %e, "offset commit failed");
    }
}

/// Waits for the brokers, then creates an at-least-once consumer of `topic`
/// in `group` (committing on revoke, reporting to `health`) and a producer.
/// `None` if `shutdown` fired first.
pub async fn at_least_once_clients(
    kafka: &KafkaConfig,
    client_id: &str,
    group: &str,
    topic: &str,
    health: &crate::telemetry::Health,
    shutdown: &CancellationToken,
) -> Result<
    Option<(
        rdkafka::consumer::StreamConsumer<CommitOnRevoke>,
        rdkafka::producer::FutureProducer,
    )>,
    KafkaError,
> {
    if !kafka.wait_until_reachable(shutdown).await {
        return Ok(None);
    }
    health.set("kafka", true, format!("reachable at {}", kafka.brokers));
    let consumer: rdkafka::consumer::StreamConsumer<CommitOnRevoke> = kafka
        .consumer_config(client_id, group)
        .create_with_context(CommitOnRevoke::new(health.clone()))?;
    consumer.subscribe(&[topic])?;
    let producer = kafka.producer_config(client_id).create()?;
    Ok(Some((consumer, producer)))
}

/// Completes a micro-batch that starts with `first`: takes what arrives
/// within `max_wait` up to `max` records. Records are detached (owned).
///
/// Call this outside any `select!`: dropping it mid-way would drop records
/// already taken from the consumer. Only the wait for `first`
/// (`StreamConsumer::recv`) is safe to race against other futures.
pub async fn fill_batch<X: rdkafka::consumer::ConsumerContext + 'static>(
    consumer: &rdkafka::consumer::StreamConsumer<X>,
    first: rdkafka::message::OwnedMessage,
    max: usize,
    max_wait: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + max_wait;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// The highest offset per (topic, partition) in `batch`, to store once the
/// batch is safely downstream.
pub fn batch_offsets(
    batch: &[rdkafka::message::OwnedMessage],
) -> std::collections::BTreeMap<(String, i32), i64> {
    use rdkafka::Message as _;
    let mut offsets = std::collections::BTreeMap::new();
    for m in batch {
        let e = offsets
            .entry((m.topic().to_string(), m.partition()))
            .or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    offsets
}

/// Stores offsets after their records are safely downstream. A failure means
/// the partition moved to another consumer, which redoes the records.
pub fn store_offsets<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    offsets: &std::collections::BTreeMap<(String, i32), i64>,
) {
    for ((topic, partition), offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(topic = %topic, partition, error = %e, "offset not stored");
        }
    }
}

/// Offsets to store, by (topic, partition): the next offset to consume.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Waits for every batch still in flight, oldest first, storing each one's
/// offsets as it completes. A batch yields `None` when shutdown cut it short:
/// the rest are dropped unstored (their records are redone by the next
/// owner) and this returns `false`.
pub async fn finish_in_order<F, C, X>(
    inflight: &mut futures::stream::FuturesOrdered<F>,
    consumer: &C,
) -> bool
where
    F: std::future::Future<Output = Option<Offsets>>,
    C: Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    use futures::StreamExt as _;
    while let Some(done) = inflight.next().await {
        match done {
            Some(offsets) => store_offsets(consumer, &offsets),
            None => {
                inflight.clear();
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_never_auto_stores_offsets() {
        let c = KafkaConfig::default().consumer_config("t", "g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        let p = KafkaConfig::default().producer_config("t");
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn user_properties_override_defaults() {
        let mut k = KafkaConfig::default();
        k.properties.insert("linger.ms".into(), "50".into());
        assert_eq!(k.producer_config("t").get("linger.ms"), Some("50"));
    }
}
