//! Code shared by Outlier's binaries: the JSON Lines v1 event format, the
//! featurizer (used by the scorer and by the search service), Kafka client
//! set-up, layered configuration, and self-observability (logs, metrics,
//! health, shutdown).

#[cfg(feature = "jemalloc")]
pub mod alloc;
pub mod batch;
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
pub mod rng;
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

/// Makes ring rustls's process-wide crypto provider. The indexer's gRPC
/// services, the CLI, the webhook client and LanceDB's object-store client
/// use TLS through rustls, and LanceDB's S3 support enables rustls's
/// aws-lc-rs provider besides ring: with two compiled in, rustls picks
/// neither by itself and the first TLS handshake panics. Idempotent; call
/// it at start, before any TLS is set up.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
