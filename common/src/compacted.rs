//! Following a compacted topic of operators' rules (suppressions, fleet
//! signatures): every reader reads the whole topic from its start and then
//! follows it, keeping the latest version of each rule in memory.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaConfig;
use crate::telemetry::Health;

/// The in-memory rules one compacted topic feeds.
pub trait RuleSet: Clone + Send + Sync + 'static {
    /// The record on the topic.
    type Rule: prost::Message + Default;
    /// Takes a record (a new rule or a new version of one), or says why not.
    fn apply(&self, rule: Self::Rule) -> Result<(), String>;
    /// The health check's detail once the topic is read ("3 active rules").
    fn status(&self) -> String;
}

/// Follows `topic` into `set` (see [`follow`]), decoding each record as the
/// set's rule.
pub async fn follow_set<S: RuleSet>(
    kafka: KafkaConfig,
    topic: String,
    group: String,
    check: crate::telemetry::Check,
    set: S,
    health: Health,
    shutdown: CancellationToken,
) {
    let status = set.clone();
    follow(
        &kafka,
        &topic,
        &group,
        check,
        move |payload| {
            let rule = <S::Rule as prost::Message>::decode(payload)
                .map_err(|e| format!("not a rule record: {e}"))?;
            set.apply(rule)
        },
        move || status.status(),
        &health,
        &shutdown,
    )
    .await
}

/// Publishes a rule (or its new version) keyed `org/id`, so compaction
/// keeps each rule's latest version.
pub async fn publish<M: prost::Message>(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    org: &str,
    id: &str,
    rule: &M,
    timeout: Duration,
) -> Result<(), KafkaError> {
    crate::kafka::send_keyed(
        producer,
        topic,
        &format!("{org}/{id}"),
        &rule.encode_to_vec(),
        timeout,
    )
    .await
}

/// Records of a rules topic refused by `apply` (malformed or invalid), by
/// topic. They are logged and counted, not dead-lettered: every follower
/// reads the whole compacted topic at each start, so a dead letter would
/// repeat per reader and per restart; the record stays until a valid
/// version of its key replaces it.
static REFUSED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "outlier_rules_refused_total",
        "Records of a rules topic (suppressions, signatures) refused as malformed or invalid, by topic",
        &["topic"]
    )
    .expect("metric registers once")
});

/// How many records of `topic` this process refused (every follower in it).
pub fn refused(topic: &str) -> u64 {
    REFUSED.with_label_values(&[topic]).get()
}

/// Reads `topic` from its start and follows it until `shutdown` fires,
/// handing each record's payload to `apply` (a refused record is logged
/// with the reason, counted in `outlier_rules_refused_total` and skipped). A reader of its own, in no consumer group
/// (the group id, under `group`, is only a name: nothing is committed).
/// Health check `check` turns up, with `status()` as its detail, once the
/// topic was read to the end it had at start. A deployment without the
/// topic has no rules: said in the check's detail (not unhealthy), and the
/// topic looked for again every 10 s.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    kafka: &KafkaConfig,
    topic: &str,
    group: &str,
    check: crate::telemetry::Check,
    mut apply: impl FnMut(&[u8]) -> Result<(), String> + Send,
    status: impl Fn() -> String + Send,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    let (consumer, ends) = loop {
        // Opening blocks (metadata and watermark requests, up to their
        // timeouts while Kafka is away): off the runtime's workers.
        let (k, g, t) = (kafka.clone(), group.to_string(), topic.to_string());
        let opened = match tokio::task::spawn_blocking(move || {
            let c = reader(&k, &g, &t)?;
            let ends = end_offsets(&c, &t);
            Ok::<_, KafkaError>((c, ends))
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(topic, error = %e, "rules reader task failed");
                Err(KafkaError::Canceled)
            }
        };
        match opened {
            Ok(c) => break c,
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                health.set(check, true, format!("no topic {topic}: none"));
                delay = Duration::from_secs(10);
            }
            Err(e) => {
                health.set(check, false, format!("{topic}: {e}"));
                tracing::warn!(topic, error = %e, "rules topic not readable; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    let mut pending = match ends {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(topic, error = %e, "rules topic's end unknown");
            HashMap::new()
        }
    };
    if pending.is_empty() {
        health.set(check, true, status());
    }
    loop {
        let m = tokio::select! {
            () = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic, error = %e, "rules topic: receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(p) = m.payload()
            && let Err(reason) = apply(p)
        {
            REFUSED.with_label_values(&[topic]).inc();
            tracing::warn!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                reason,
                "rule record refused"
            );
        }
        if let Some(end) = pending.get(&m.partition())
            && m.offset() + 1 >= *end
        {
            pending.remove(&m.partition());
        }
        if pending.is_empty() {
            health.set(check, true, status());
        }
    }
}

fn reader(kafka: &KafkaConfig, group: &str, topic: &str) -> Result<StreamConsumer, KafkaError> {
    let consumer = kafka.reader(group)?;
    let mut tpl = TopicPartitionList::new();
    for p in crate::kafka::partitions(&consumer, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// The end offset of each non-empty partition of `topic`.
fn end_offsets(consumer: &StreamConsumer, topic: &str) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut out = HashMap::new();
    for e in consumer.assignment()?.elements() {
        let (low, high) =
            consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))?;
        if high > low {
            out.insert(e.partition(), high);
        }
    }
    Ok(out)
}
