//! Collector metrics, prefixed `outlier_collector_`.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

/// Events by outcome: `published`, `invalid` (malformed input), `failed`
/// (Kafka did not acknowledge them).
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_collector_events_total",
        "Events handled by the collector, by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});
