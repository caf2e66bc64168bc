//! Fleet health: each host's latest collector heartbeat, from the
//! heartbeats topic (which only scorers write, after checking each
//! heartbeat's org as they check an event's) into the ClickHouse table
//! `hosts`, one row per (org, host) once merged (ReplacingMergeTree on the
//! heartbeat's time; queries read with FINAL). `ListHosts` answers from it,
//! most silent first.

use clickhouse::{Client, Row};
use outlier_common::kafka::KafkaConfig;
use outlier_common::telemetry::Health;
use outlier_proto::Heartbeat;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Name of the hosts table.
pub const TABLE: &str = "hosts";

/// One heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct HostRow {
    pub org: String,
    pub host: String,
    /// When it was sent, seconds (DateTime).
    pub ts: u32,
    pub ts_ns: u64,
    pub version: String,
    pub capture_mode: String,
    pub started_ns: u64,
    pub events_captured: u64,
    pub kernel_drops: u64,
    pub spool_dropped: u64,
    pub spool_backlog: u64,
}

impl HostRow {
    pub fn to_heartbeat(&self) -> Heartbeat {
        Heartbeat {
            org: self.org.clone(),
            host: self.host.clone(),
            ts_ns: self.ts_ns,
            version: self.version.clone(),
            capture_mode: self.capture_mode.clone(),
            started_ns: self.started_ns,
            events_captured: self.events_captured,
            kernel_drops: self.kernel_drops,
            spool_dropped: self.spool_dropped,
            spool_backlog: self.spool_backlog,
        }
    }
}

/// The statements that create the hosts table in `db`.
pub fn create_table_sql(db: &str, layout: &crate::schema::Layout) -> Vec<String> {
    layout.create(
        db,
        TABLE,
        "(\n    org String,\n    host String,\n    ts DateTime,\n    ts_ns UInt64,\n    version String,\n    capture_mode String,\n    started_ns UInt64,\n    events_captured UInt64,\n    kernel_drops UInt64,\n    spool_dropped UInt64,\n    spool_backlog UInt64\n)",
        "ts_ns",
        "ORDER BY (org, host)",
    )
}

/// The row of a heartbeat record, or why it is not one.
pub fn row_of(msg: &OwnedMessage) -> Result<HostRow, String> {
    let payload = msg.payload().ok_or("empty record")?;
    let h = Heartbeat::decode(payload).map_err(|e| format!("not an outlier.v1.Heartbeat: {e}"))?;
    if h.org.is_empty() || h.host.is_empty() {
        return Err("heartbeat without an org or host".into());
    }
    Ok(HostRow {
        ts: u32::try_from(h.ts_ns / 1_000_000_000).unwrap_or(u32::MAX),
        org: h.org,
        host: h.host,
        ts_ns: h.ts_ns,
        version: h.version,
        capture_mode: h.capture_mode,
        started_ns: h.started_ns,
        events_captured: h.events_captured,
        kernel_drops: h.kernel_drops,
        spool_dropped: h.spool_dropped,
        spool_backlog: h.spool_backlog,
    })
}

/// Writes the heartbeats topic into `hosts` until `shutdown` fires.
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    ch: Client,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka_cfg.topics.heartbeats.clone();
    crate::topic_sink::run(
        &kafka_cfg,
        &topic,
        &group,
        TABLE,
        row_of,
        &metrics::HEARTBEATS,
        &ch,
        &health,
        &shutdown,
    )
    .await
}

/// The org's hosts whose latest heartbeat was sent at or before
/// `sent_before_ns` (every host for `u64::MAX`), most silent first.
pub async fn list(
    ch: &Client,
    org: &str,
    sent_before_ns: u64,
) -> Result<Vec<HostRow>, clickhouse::error::Error> {
    ch.query(
        "SELECT ?fields FROM hosts FINAL WHERE org = ? AND ts_ns <= ? ORDER BY ts_ns ASC, host LIMIT 100000",
    )
    .bind(org)
    .bind(sent_before_ns)
    .fetch_all::<HostRow>()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    #[test]
    fn a_heartbeat_record_becomes_a_host_row_and_back() {
        let h = Heartbeat {
            org: "acme".into(),
            host: "web-1".into(),
            ts_ns: 1_700_000_000_500_000_000,
            version: "0.1.0".into(),
            capture_mode: "ebpf".into(),
            started_ns: 1_699_999_000_000_000_000,
            events_captured: 1234,
            kernel_drops: 5,
            spool_dropped: 0,
            spool_backlog: 17,
        };
        let m = OwnedMessage::new(
            Some(h.encode_to_vec()),
            None,
            "outlier.heartbeats.v1".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        let r = row_of(&m).unwrap();
        assert_eq!(r.ts, 1_700_000_000);
        assert_eq!(r.to_heartbeat(), h);
        let empty = OwnedMessage::new(
            Some(Heartbeat::default().encode_to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert!(row_of(&empty).is_err());
    }
}
