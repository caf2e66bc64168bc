//! Indexer metrics, prefixed `outlier_indexer_`.

use std::sync::LazyLock;

use outlier_common::labels;
use outlier_common::telemetry::Counter;

use prometheus::{
    Histogram, IntCounter, IntGauge, exponential_buckets, register_histogram, register_int_counter,
    register_int_gauge,
};

labels! {
    pub enum RowOutcome {
        Inserted = "inserted",
        DeadLetter = "deadletter",
        Poison = "poison",
    }
}
pub static ROWS: LazyLock<Counter<RowOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_rows_total",
        "Scored events handled, by outcome (inserted/deadletter)",
        "outcome",
    )
});

labels! {
    /// A record of a side topic written to its table, or refused.
    pub enum Written {
        Written = "written",
        Invalid = "invalid",
    }
}
pub static AUDIT: LazyLock<Counter<Written>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_feedback_audit_total",
        "Feedback records of the feedback topic, by outcome (written/invalid)",
        "outcome",
    )
});

pub static HEARTBEATS: LazyLock<Counter<Written>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_heartbeats_total",
        "Collector heartbeats of the heartbeats topic, by outcome (written/invalid)",
        "outcome",
    )
});
pub static DEAD_LETTERS_SEEN: LazyLock<Counter<Written>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_dead_letters_total",
        "Records of the dead-letter topic written to the dead_letters table, by outcome (written/invalid)",
        "outcome",
    )
});

labels! {
    pub enum IncidentEvent {
        Grouped = "grouped",
        Skipped = "skipped",
        Invalid = "invalid",
    }
}
pub static INCIDENT_EVENTS: LazyLock<Counter<IncidentEvent>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_incident_events_total",
        "Records of the alerts topic read for incidents, by outcome (grouped/skipped/invalid)",
        "outcome",
    )
});

labels! {
    pub enum IncidentChange {
        Opened = "opened",
        Updated = "updated",
    }
}
pub static INCIDENTS: LazyLock<Counter<IncidentChange>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_incidents_total",
        "Incidents opened, and incident versions written (updated)",
        "change",
    )
});

pub static INCIDENTS_OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_indexer_incidents_open",
        "Incidents new flagged events can still join"
    )
    .expect("metric registers once")
});

labels! {
    pub enum FindingOutcome {
        Published = "published",
        Invalid = "invalid",
    }
}
pub static FINDINGS: LazyLock<Counter<FindingOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_ocsf_findings_total",
        "OCSF Detection Findings published, and alerts that could not be read (invalid)",
        "outcome",
    )
});

labels! {
    pub enum WebhookOutcome {
        Posted = "posted",
        Retried = "retried",
        DeadLetter = "deadletter",
    }
}
pub static WEBHOOK: LazyLock<Counter<WebhookOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_indexer_webhook_total",
        "Findings posted to the webhook, POSTs retried, findings dead-lettered after refusals",
        "outcome",
    )
});

pub static INSERT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_indexer_insert_errors_total",
        "ClickHouse inserts that failed and were retried"
    )
    .expect("metric registers once")
});

pub static INSERT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_indexer_insert_seconds",
        "Time per ClickHouse batch insert",
        exponential_buckets(0.001, 2.5, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static BATCH_ROWS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_indexer_batch_rows",
        "Rows per ClickHouse insert",
        exponential_buckets(1.0, 4.0, 10).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static LAG_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_indexer_event_lag_seconds",
        "Time from the event's timestamp to its insert into ClickHouse",
        exponential_buckets(0.001, 3.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static SEARCH_UPSERTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_indexer_search_behaviours_total",
        "Distinct behaviours written to the search index"
    )
    .expect("metric registers once")
});

pub static ALERT_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_indexer_alert_streams",
        "StreamAlerts calls being served"
    )
    .expect("metric registers once")
});

pub static ALERT_READERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_indexer_alert_readers",
        "Kafka consumers of the alerts topic serving StreamAlerts: the shared one, and those reading a resumed stream's gap"
    )
    .expect("metric registers once")
});

pub static ALERT_STREAMS_LAGGED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_indexer_alert_streams_lagged_total",
        "StreamAlerts calls ended because they fell behind with no catch-up reader free (the client resumes by cursor)"
    )
    .expect("metric registers once")
});
