//! Outlier's collector: turns what happens on a host into protobuf events on
//! Kafka. This crate holds the replay path (JSON Lines v1 from a file or
//! stdin); live capture with eBPF and the /proc fallback build on the same
//! [`publish::Publisher`].

pub mod config;
pub mod metrics;
pub mod publish;
pub mod replay;
