//! The feedback audit: every record of the feedback topic — an operator's
//! verdict on an event, which teaches or untaches a workload's baseline —
//! becomes a row of `feedback_audit` in ClickHouse: who, when, why, and on
//! what. The indexer reads the topic in its own consumer group (the scorers
//! read it too, to apply it), at-least-once; a replayed record collapses
//! into its first row (ReplacingMergeTree ordered by the record's source).

use std::time::Duration;

use clickhouse::{Client, Row};
use outlier_common::kafka::{self, Assignment, KafkaConfig};
use outlier_common::retry::{Backoff, RetryPolicy};
use outlier_common::telemetry::Health;
use outlier_proto::{Feedback, FeedbackLabel, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Name of the audit table.
pub const TABLE: &str = "feedback_audit";

/// One audited feedback record.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct AuditRow {
    /// When the feedback was given, seconds (DateTime).
    pub ts: u32,
    pub ts_ns: u64,
    /// Who gave it, as the writer stated it (see docs/security.md).
    pub actor: String,
    /// `benign` or `malicious`.
    pub label: String,
    /// Why.
    pub note: String,
    pub org: String,
    pub workload: String,
    pub host: String,
    pub event_id: String,
    pub kind: String,
    /// What the event did: argv, path or remote address.
    pub what: String,
    /// `topic/partition/offset` of the record.
    pub source: String,
}

/// The `CREATE TABLE` statement of the audit table in `db`.
pub fn create_table_sql(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TABLE} (\n    ts DateTime,\n    ts_ns UInt64,\n    actor String,\n    label String,\n    note String,\n    org String,\n    workload String,\n    host String,\n    event_id String,\n    kind String,\n    what String,\n    source String,\n    inserted_at DateTime DEFAULT now()\n) ENGINE = ReplacingMergeTree()\nPARTITION BY toYYYYMM(ts)\nORDER BY (org, ts, source)"
    )
}

/// The audit row of a feedback record, or why it is not one.
pub fn row_of(msg: &OwnedMessage) -> Result<AuditRow, String> {
    let payload = msg.payload().ok_or("empty record")?;
    let fb = Feedback::decode(payload).map_err(|e| format!("not an outlier.v1.Feedback: {e}"))?;
    let label = match fb.label() {
        FeedbackLabel::Benign => "benign",
        FeedbackLabel::Malicious => "malicious",
        FeedbackLabel::Unspecified => return Err("feedback without a label".into()),
    };
    let event = fb.event.as_ref().ok_or("feedback without an event")?;
    let what = match &event.detail {
        Some(Detail::Exec(x)) => x.argv.join(" "),
        Some(Detail::Connect(c)) => format!("{}:{}", c.remote_ip, c.remote_port),
        Some(Detail::Open(o)) => o.path.clone(),
        None => String::new(),
    };
    Ok(AuditRow {
        ts: u32::try_from(fb.ts_ns / 1_000_000_000).unwrap_or(u32::MAX),
        ts_ns: fb.ts_ns,
        actor: fb.actor.clone(),
        label: label.into(),
        note: fb.note.clone(),
        org: event.org.clone(),
        workload: event.workload.clone(),
        host: event.host.clone(),
        event_id: event.event_id.clone(),
        kind: event.kind_name().to_string(),
        what,
        source: format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()),
    })
}

/// Audits the feedback topic until `shutdown` fires. Undecodable records
/// are logged and counted (the scorers dead-letter them).
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    ch: Client,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka_cfg.topics.feedback.clone();
    sink_topic(
        &kafka_cfg,
        &topic,
        &group,
        TABLE,
        row_of,
        &metrics::AUDIT,
        &ch,
        &health,
        &shutdown,
    )
    .await
}

/// Writes each record of `topic` as a row of `table`, at-least-once: a
/// batch's offsets are stored once its rows are in ClickHouse (retried
/// with backoff while it refuses them). Records `decode` rejects are logged
/// and counted under `invalid`; rows written under `written`.
#[allow(clippy::too_many_arguments)]
pub async fn sink_topic<T>(
    kafka_cfg: &KafkaConfig,
    topic: &str,
    group: &str,
    table: &str,
    decode: fn(&OwnedMessage) -> Result<T, String>,
    counter: &prometheus::IntCounterVec,
    ch: &Client,
    health: &Health,
    shutdown: &CancellationToken,
) where
    T: clickhouse::RowOwned + clickhouse::RowWrite + Send + Sync,
{
    let consumer = match kafka::at_least_once_clients(
        kafka_cfg,
        "outlier-indexer-side",
        group,
        &[topic],
        Assignment::Sticky,
        health,
        shutdown,
    )
    .await
    {
        Ok(Some((c, _))) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(topic, error = %e, "consumer not created");
            health.set("kafka", false, format!("{topic}: {e}"));
            return;
        }
    };
    tracing::info!(topic, group, table, "writing the topic to ClickHouse");
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            m = consumer.recv() => match m {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(topic, error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let batch = kafka::fill_batch(&consumer, first, 1000, Duration::from_millis(100)).await;
        let offsets = kafka::batch_offsets(&batch);
        let mut rows = Vec::with_capacity(batch.len());
        for m in &batch {
            match decode(m) {
                Ok(r) => rows.push(r),
                Err(reason) => {
                    counter.with_label_values(&["invalid"]).inc();
                    tracing::warn!(
                        topic = m.topic(),
                        partition = m.partition(),
                        offset = m.offset(),
                        reason,
                        "record not written"
                    );
                }
            }
        }
        let mut backoff = Backoff::new(RetryPolicy {
            max_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        });
        while !rows.is_empty() {
            match insert(ch, table, &rows).await {
                Ok(()) => {
                    counter
                        .with_label_values(&["written"])
                        .inc_by(rows.len() as u64);
                    break;
                }
                Err(e) => {
                    health.set("clickhouse", false, format!("{table}: {e}"));
                    tracing::warn!(table, error = %e, "insert failed; retrying");
                }
            }
            if !backoff.wait(shutdown).await {
                // Unstored: the next start writes these again.
                kafka::commit_stored(&consumer);
                return;
            }
        }
        kafka::store_offsets(&consumer, &offsets);
    }
    kafka::commit_stored(&consumer);
}

async fn insert<T>(ch: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = ch.insert::<T>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::{Event, Exec};
    use rdkafka::Timestamp;

    fn record(fb: &Feedback) -> OwnedMessage {
        OwnedMessage::new(
            Some(fb.encode_to_vec()),
            None,
            "outlier.feedback.v1".into(),
            Timestamp::NotAvailable,
            4,
            17,
            None,
        )
    }

    #[test]
    fn a_feedback_record_becomes_who_when_why_and_what() {
        let fb = Feedback {
            event: Some(Event {
                org: "acme".into(),
                workload: "db".into(),
                host: "db-1".into(),
                event_id: "e1".into(),
                detail: Some(Detail::Exec(Exec {
                    argv: vec!["pg_dump".into(), "-Fc".into()],
                    ..Exec::default()
                })),
                ..Event::default()
            }),
            label: FeedbackLabel::Benign as i32,
            actor: "alice".into(),
            note: "nightly backup".into(),
            ts_ns: 1_700_000_000_123_000_000,
        };
        let r = row_of(&record(&fb)).unwrap();
        assert_eq!(
            (r.actor.as_str(), r.label.as_str(), r.note.as_str()),
            ("alice", "benign", "nightly backup")
        );
        assert_eq!((r.org.as_str(), r.event_id.as_str()), ("acme", "e1"));
        assert_eq!(r.what, "pg_dump -Fc");
        assert_eq!(r.ts, 1_700_000_000);
        assert_eq!(r.source, "outlier.feedback.v1/4/17");
        let unlabelled = Feedback { label: 0, ..fb };
        assert!(row_of(&record(&unlabelled)).unwrap_err().contains("label"));
    }
}
