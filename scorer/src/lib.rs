//! Outlier's scorer: consumes events from Kafka, embeds each one, scores it
//! against the learned baseline of its (org, workload), and publishes the
//! scored event. Baselines are answered from memory and persisted to LanceDB
//! in batches. The threat classifier (`outlier-classifier`) runs beside the
//! baseline on every event; the verdict combines both (`score::combine`).

pub mod baseline;
pub mod config;
pub mod feedback;
pub mod metrics;
pub mod pipeline;
pub mod score;
pub mod store;
pub mod threat;

pub use config::ScorerConfig;
pub use pipeline::run;
