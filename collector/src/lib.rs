//! Outlier's collector: turns what happens on a host into protobuf events on
//! Kafka.
//!
//! - live capture (`run`): the eBPF programs (`ebpf`, records parsed by
//!   `records`) or, where they cannot load, the /proc fallback (`procfs`);
//!   records become v1 events (`capture`, identities from `identity`), go
//!   to a bounded on-disk spool (`spool`) and from there, in order and
//!   loss-free, to Kafka (`sender`);
//! - replay (`replay`): JSON Lines v1 from a file or stdin.

pub mod btf;
pub mod capture;
pub mod config;
pub mod ebpf;
pub mod heartbeat;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod procfs;
pub mod publish;
pub mod records;
pub mod replay;
pub mod sender;
pub mod spool;
