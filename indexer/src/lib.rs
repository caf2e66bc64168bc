//! Outlier's indexer: sinks scored events from Kafka into ClickHouse
//! `security_events` in batches, at-least-once and idempotent, keeps the
//! search index of behaviours, and serves the gRPC query, search and alert
//! stream services and the web console; audits operators' feedback into
//! `feedback_audit`.

pub mod alert_hub;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod deadletters;
pub mod grpc;
pub mod hosts;
pub mod incidents;
pub mod metrics;
pub mod ocsf;
pub mod ocsf_schema;
pub mod query;
pub mod row;
pub mod schema;
pub mod search_index;
pub mod sink;
pub mod topic_sink;
pub mod webhook;

pub use outlier_common::install_crypto_provider;

pub use config::IndexerConfig;
pub use sink::run;
