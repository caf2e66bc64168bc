//! The feedback audit: every record of the feedback topic — an operator's
//! verdict on an event, which teaches or unteaches a workload's baseline —
//! becomes a row of `feedback_audit` in ClickHouse: who, when, why, and on
//! what. The indexer reads the topic in its own consumer group (the scorers
//! read it too, to apply it), at-least-once; a replayed record collapses
//! into its first row (ReplacingMergeTree ordered by the record's source).

use clickhouse::{Client, Row};
use outlier_common::kafka::KafkaConfig;
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

/// The statements that create the audit table in `db`.
pub fn create_table_sql(db: &str, layout: &crate::schema::Layout) -> Vec<String> {
    layout.create(
        db,
        TABLE,
        "(\n    ts DateTime,\n    ts_ns UInt64,\n    actor String,\n    label String,\n    note String,\n    org String,\n    workload String,\n    host String,\n    event_id String,\n    kind String,\n    what String,\n    source String,\n    inserted_at DateTime DEFAULT now()\n)",
        "",
        "PARTITION BY toYYYYMM(ts)\nORDER BY (org, ts, source)",
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
    crate::topic_sink::run(
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
