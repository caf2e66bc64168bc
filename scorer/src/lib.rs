//! Outlier's scorer: consumes events from Kafka, embeds each one, scores it
//! against the learned baseline of its (org, workload), and publishes the
//! scored event. Baselines are answered from memory and persisted to LanceDB
//! in batches. The threat classifier (`outlier-classifier`) runs beside the
//! baseline on every event; the verdict combines both (`score::combine`).
//!
//! By responsibility: [`pipeline`] (the Kafka loop and the worker that owns
//! the loaded baselines), [`decode`] (records in, checked), [`judge`] (the
//! pure scoring domain: baselines, classifier, feedback), [`baseline`] (one
//! workload's behaviours and their nearest-neighbour search), [`score`]
//! (the verdict), [`store`] (LanceDB), and, private, `deliver` (records
//! out, at least once) and `persist` (background writes to LanceDB).

pub mod baseline;
pub mod config;
pub mod decode;
mod deliver;
pub mod feedback;
pub mod judge;
pub mod metrics;
mod persist;
pub mod pipeline;
pub mod repeats;
pub mod score;
pub mod store;
pub mod threat;

pub use config::ScorerConfig;
pub use pipeline::run;
