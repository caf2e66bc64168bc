//! Collector metrics, prefixed `outlier_collector_`.

use std::sync::LazyLock;

use outlier_common::labels;
use outlier_common::telemetry::Counter;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

labels! {
    /// Events by outcome.
    pub enum EventOutcome {
        /// Kafka acknowledged them.
        Published = "published",
        /// Malformed replay input.
        Invalid = "invalid",
        /// Kafka did not acknowledge a replay.
        Failed = "failed",
        /// Kafka will never take the record: too large, invalid.
        Refused = "refused",
    }
}

pub static EVENTS: LazyLock<Counter<EventOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_collector_events_total",
        "Events handled by the collector, by outcome",
        "outcome",
    )
});

labels! {
    pub enum HeartbeatOutcome {
        Sent = "sent",
        Failed = "failed",
    }
}

pub static HEARTBEATS: LazyLock<Counter<HeartbeatOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_collector_heartbeats_total",
        "Heartbeats published, by outcome (sent/failed)",
        "outcome",
    )
});

/// Events captured on this host, by kind and source (ebpf, procfs).
pub static CAPTURED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_collector_captured_total",
        "Events captured on this host, by kind and source",
        &["kind", "source"]
    )
    .expect("metric registers once")
});

/// Records the kernel side lost or left out: `ringbuf_full` (user space
/// fell behind), `read_failed` (a path could not be read from user
/// memory), `stash_full` (a per-thread stash could not be written),
/// `sendmsg_repeat` (a datagram destination reported in the last minute:
/// by design).
pub static KERNEL_DROPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_collector_kernel_drops_total",
        "Records lost in the kernel, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

/// 1 for the capture in use: `mode` ebpf or procfs, `hooks` lsm (security
/// hooks), tracepoints (syscall tracepoints) or none.
pub static CAPTURE_HOOKS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "outlier_collector_capture_info",
        "The capture in use (1): mode and kernel hooks",
        &["mode", "hooks"]
    )
    .expect("metric registers once")
});

/// Ring-buffer records that did not parse (a bug, never expected).
pub static MALFORMED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_collector_malformed_records_total",
        "Ring buffer records that did not parse"
    )
    .expect("metric registers once")
});

/// Unsent events dropped because the spool was full.
pub static SPOOL_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_collector_spool_dropped_total",
        "Oldest unsent events dropped because the spool reached its size limit"
    )
    .expect("metric registers once")
});

pub static SPOOL_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_collector_spool_backlog_events",
        "Events in the spool not yet acknowledged by Kafka"
    )
    .expect("metric registers once")
});

pub static SPOOL_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("outlier_collector_spool_bytes", "Bytes held by the spool")
        .expect("metric registers once")
});

pub static INFLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_collector_inflight_events",
        "Events produced and awaiting Kafka's acknowledgement"
    )
    .expect("metric registers once")
});

/// Deliveries Kafka did not acknowledge (each makes the sender resend from
/// the spool's cursor).
pub static PUBLISH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_collector_publish_failures_total",
        "Deliveries Kafka did not acknowledge (the events are sent again)"
    )
    .expect("metric registers once")
});
