//! Outlier's indexer: sinks scored events from Kafka into ClickHouse
//! `security_events` in batches, at-least-once and idempotent.

pub mod config;
pub mod metrics;
pub mod row;
pub mod schema;
pub mod sink;

pub use config::IndexerConfig;
pub use sink::run;
