//! Dead letters per org: each record of the dead-letter topic (the copy of
//! a record that can never be processed, its reason and its source in the
//! headers) as a row of the ClickHouse table `dead_letters`, so the console
//! can show an org what was refused and why. The org is the one whose own
//! events topic the record came from, else the one its key names
//! (`org/workload`).

use clickhouse::{Client, Row};
use outlier_common::kafka::{DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, KafkaConfig, Topics};
use outlier_common::telemetry::Health;
use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Name of the dead letters table.
pub const TABLE: &str = "dead_letters";

/// One dead letter.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct DeadLetterRow {
    pub org: String,
    pub workload: String,
    /// When it was dead-lettered (the record's time), seconds and ns.
    pub ts: u32,
    pub ts_ns: u64,
    /// Why (`malformed: …`, `org_mismatch: …`), at most 300 characters.
    pub reason: String,
    /// Where the refused record was: `topic/partition/offset`.
    pub source: String,
    /// Bytes of the copy (cut to the dead-letter bound).
    pub bytes: u32,
}

/// The statements that create the table in `db`; rows expire with the
/// events (`ttl_days`, when the server has table TTLs).
pub fn create_table_sql(
    db: &str,
    layout: &crate::schema::Layout,
    ttl_days: Option<u32>,
) -> Vec<String> {
    let ttl = crate::schema::ttl_clause(ttl_days);
    layout.create(
        db,
        TABLE,
        "(\n    org String,\n    workload String,\n    ts DateTime,\n    ts_ns UInt64,\n    reason String,\n    source String,\n    bytes UInt32\n)",
        "",
        &format!("ORDER BY (org, ts, source){ttl}"),
    )
}

fn header(msg: &OwnedMessage, key: &str) -> String {
    msg.headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == key)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_default()
}

/// The row of a dead-letter record, or why it is not one.
pub fn row_of(topics: &Topics, msg: &OwnedMessage) -> Result<DeadLetterRow, String> {
    let reason = header(msg, DLQ_REASON_HEADER);
    if reason.is_empty() {
        return Err(format!("a record without the {DLQ_REASON_HEADER} header"));
    }
    let source = header(msg, DLQ_SOURCE_HEADER);
    let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
    let (key_org, workload) = key.split_once('/').unwrap_or((key.as_str(), ""));
    let source_topic = source.rsplitn(3, '/').nth(2).unwrap_or_default();
    let org = topics
        .org_of_events_topic(source_topic)
        .unwrap_or(key_org)
        .chars()
        .take(256)
        .collect();
    let ts_ns = match msg.timestamp().to_millis() {
        Some(ms) if ms > 0 => ms as u64 * 1_000_000,
        _ => outlier_common::now_ns(),
    };
    Ok(DeadLetterRow {
        org,
        workload: workload.chars().take(256).collect(),
        ts: u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX),
        ts_ns,
        reason: reason.chars().take(300).collect(),
        source,
        bytes: u32::try_from(msg.payload().map_or(0, <[u8]>::len)).unwrap_or(u32::MAX),
    })
}

/// Writes the dead-letter topic into `dead_letters` until `shutdown` fires.
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    ch: Client,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka_cfg.topics.deadletter.clone();
    let topics = kafka_cfg.topics.clone();
    crate::topic_sink::run(
        &kafka_cfg,
        &topic,
        &group,
        TABLE,
        move |m| row_of(&topics, m),
        &metrics::DEAD_LETTERS_SEEN,
        &ch,
        &health,
        &shutdown,
    )
    .await
}

/// Dead letters of one reason kind (the reason up to its first `:`).
#[derive(Debug, Clone, Deserialize, Row)]
pub struct ReasonCount {
    pub kind: String,
    pub n: u64,
    pub last_ns: u64,
}

/// An org's dead letters since `since_ns` by kind of reason, most first.
pub async fn by_reason(
    ch: &Client,
    org: &str,
    since_ns: u64,
) -> Result<Vec<ReasonCount>, clickhouse::error::Error> {
    ch.query(
        "SELECT splitByChar(':', reason)[1] AS kind, uniqExact(source) AS n, max(ts_ns) AS last_ns \
         FROM dead_letters WHERE org = ? AND ts >= toDateTime(?) GROUP BY kind ORDER BY n DESC, kind LIMIT 50",
    )
    .bind(org)
    .bind(since_ns / 1_000_000_000)
    .fetch_all::<ReasonCount>()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    fn record(topic: &str, key: &str, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"garbage".to_vec()),
            Some(key.as_bytes().to_vec()),
            topic.into(),
            Timestamp::CreateTime(1_700_000_000_123),
            0,
            7,
            Some(headers),
        )
    }

    #[test]
    fn a_dead_letter_belongs_to_the_org_of_its_source_topic_else_of_its_key() {
        let topics = Topics::default();
        let h = |source: &str| {
            outlier_common::kafka::dead_letter_headers("org_mismatch: names org victim", source)
        };
        // From acme's own topic, claiming another org: acme's.
        let r = row_of(
            &topics,
            &record(
                &topics.deadletter,
                "victim/web",
                h(&format!("{}.acme/3/42", topics.events)),
            ),
        )
        .unwrap();
        assert_eq!((r.org.as_str(), r.workload.as_str()), ("acme", "web"));
        assert_eq!(r.reason, "org_mismatch: names org victim");
        assert_eq!(r.ts_ns, 1_700_000_000_123_000_000);
        assert_eq!(r.bytes, 7);
        // From the shared topic: the key's.
        let r = row_of(
            &topics,
            &record(
                &topics.deadletter,
                "globex/db",
                h(&format!("{}/0/1", topics.events)),
            ),
        )
        .unwrap();
        assert_eq!(r.org, "globex");
        // Not a dead letter at all.
        let plain = OwnedHeaders::new().insert(Header {
            key: "x",
            value: Some(b"y".as_slice()),
        });
        assert!(row_of(&topics, &record("t", "o/w", plain)).is_err());
    }
}
