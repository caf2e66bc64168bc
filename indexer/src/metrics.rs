//! Indexer metrics, prefixed `outlier_indexer_`.

use std::sync::LazyLock;

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, exponential_buckets, register_histogram,
    register_int_counter, register_int_counter_vec, register_int_gauge,
};

pub static ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_rows_total",
        "Scored events handled, by outcome (inserted/deadletter)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static AUDIT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_feedback_audit_total",
        "Feedback records of the feedback topic, by outcome (written/invalid)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static HEARTBEATS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_heartbeats_total",
        "Collector heartbeats of the heartbeats topic, by outcome (written/invalid)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static INCIDENT_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_incident_events_total",
        "Records of the alerts topic read for incidents, by outcome (grouped/skipped/invalid)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static INCIDENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_incidents_total",
        "Incidents opened, and incident versions written (updated)",
        &["change"]
    )
    .expect("metric registers once")
});

pub static INCIDENTS_OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_indexer_incidents_open",
        "Incidents new flagged events can still join"
    )
    .expect("metric registers once")
});

pub static FINDINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_ocsf_findings_total",
        "OCSF Detection Findings published, and alerts that could not be read (invalid)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static WEBHOOK: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_indexer_webhook_total",
        "Findings posted to the webhook, POSTs retried, findings dead-lettered after refusals",
        &["outcome"]
    )
    .expect("metric registers once")
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
