//! Code shared by Outlier's binaries: the JSON Lines v1 event format, the
//! featurizer (used by the scorer and by the search service), Kafka client
//! set-up, layered configuration, and self-observability (logs, metrics,
//! health, shutdown).

pub mod compacted;
pub mod config;
pub mod featurize;
pub mod immune;
pub mod json;
pub mod kafka;
#[cfg(feature = "lance")]
pub mod lance;
pub mod names;
pub mod retry;
pub mod suppress;
pub mod telemetry;

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Version of the Outlier build, stamped on scored events.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
