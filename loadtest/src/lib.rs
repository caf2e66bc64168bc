//! Outlier's fleet simulator and load test.
//!
//! Placeholder: the simulator (realistic labelled telemetry from
//! `data/`) and the load run land with the load-test issue.
