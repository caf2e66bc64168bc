//! Outlier's v1 wire contract: the event envelope, the scored event and the
//! gRPC services, generated from `proto/outlier/v1/*.proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("outlier.v1");

    /// Encoded `FileDescriptorSet` of the v1 package, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("outlier_v1_descriptor");
}

pub use v1::*;

impl Event {
    /// Short name of the event's kind: "exec", "connect", "open" or "unknown".
    pub fn kind_name(&self) -> &'static str {
        match self.detail {
            Some(event::Detail::Exec(_)) => "exec",
            Some(event::Detail::Connect(_)) => "connect",
            Some(event::Detail::Open(_)) => "open",
            None => "unknown",
        }
    }

    /// The Kafka record key of the event: `org/workload`.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.org, self.workload)
    }
}

impl Verdict {
    /// Lower-case name used in storage and on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Alert => "alert",
            Verdict::Unspecified => "unspecified",
        }
    }
}
