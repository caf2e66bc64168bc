//! Outlier's fleet simulator and load test.
//!
//! - [`sim`]: realistic labelled telemetry for N hosts × M workloads, with
//!   attacks from the training corpus injected at a chosen rate.
//! - [`run`]: drives a running stack at a target rate and measures
//!   throughput, end-to-end latency, loss and detection.
//! - [`report`]: the Markdown report and its plots.
//! - [`dataset`]: the threat classifier's training data.

pub mod dataset;
pub mod eval;
pub mod report;
pub mod run;
pub mod shell;
pub mod sim;
