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

    /// The name of the program the event's process runs. For an exec it is
    /// `comm` (the new image's name, which may differ from the executable
    /// on purpose: that is evidence). For an open or a connect the kernel
    /// reports the name of the *thread* that made the call, which programs
    /// set freely (rustc's `opt 4ax0x0y7gof`, a JVM's `C2 CompilerThre`):
    /// there the executable's name is used unless the thread's name is a
    /// prefix of it.
    pub fn program_name(&self) -> &str {
        if matches!(self.detail, Some(event::Detail::Exec(_))) || self.exe.is_empty() {
            return &self.comm;
        }
        let exe = self.exe.rsplit('/').next().unwrap_or(&self.exe);
        if exe.is_empty() || exe.starts_with(self.comm.as_str()) {
            &self.comm
        } else {
            exe
        }
    }

    /// The Kafka record key of the event: `org/workload`.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.org, self.workload)
    }
}

impl Heartbeat {
    /// The Kafka key of a heartbeat: its org and host.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.org, self.host)
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
