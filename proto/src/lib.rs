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

pub mod facts;

impl Event {
    /// The event's kind; `Unspecified` when it carries no detail.
    pub fn kind(&self) -> EventKind {
        match self.detail {
            Some(event::Detail::Exec(_)) => EventKind::Exec,
            Some(event::Detail::Connect(_)) => EventKind::Connect,
            Some(event::Detail::Open(_)) => EventKind::Open,
            None => EventKind::Unspecified,
        }
    }

    /// Short name of the event's kind: "exec", "connect", "open" or "unknown".
    pub fn kind_name(&self) -> &'static str {
        self.kind().label().unwrap_or("unknown")
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

    /// What the event did, in one line: an exec's command line, a
    /// connection's `→ address:port`, an open's `open path`.
    pub fn action(&self) -> String {
        match &self.detail {
            Some(event::Detail::Exec(x)) => x.argv.join(" "),
            Some(event::Detail::Connect(c)) => format!("→ {}:{}", c.remote_ip, c.remote_port),
            Some(event::Detail::Open(o)) => format!("open {}", o.path),
            None => String::new(),
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
    const ALL: [Verdict; 4] = [
        Verdict::Ok,
        Verdict::Warn,
        Verdict::Alert,
        Verdict::Unspecified,
    ];

    /// Lower-case name used in storage and on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Alert => "alert",
            Verdict::Unspecified => "unspecified",
        }
    }

    /// The verdict a [`label`](Self::label) names.
    pub fn from_label(label: &str) -> Option<Verdict> {
        Self::ALL.into_iter().find(|v| v.label() == label)
    }
}

impl EventKind {
    const ALL: [EventKind; 4] = [
        EventKind::Exec,
        EventKind::Connect,
        EventKind::Open,
        EventKind::Unspecified,
    ];

    /// Lower-case name used in storage, JSON and queries; `None` for
    /// `Unspecified`.
    pub fn label(self) -> Option<&'static str> {
        match self {
            EventKind::Exec => Some("exec"),
            EventKind::Connect => Some("connect"),
            EventKind::Open => Some("open"),
            EventKind::Unspecified => None,
        }
    }

    /// The kind a [`label`](Self::label) names.
    pub fn from_label(label: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.label() == Some(label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_their_inverses_agree() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::from_label(v.label()), Some(v));
        }
        for k in EventKind::ALL {
            if let Some(l) = k.label() {
                assert_eq!(EventKind::from_label(l), Some(k));
            }
        }
        assert_eq!(Verdict::from_label("ALERT"), None);
        assert_eq!(EventKind::from_label("unknown"), None);
        let e = Event {
            detail: Some(event::Detail::Open(Open::default())),
            ..Event::default()
        };
        assert_eq!(e.kind_name(), "open");
        assert_eq!(Event::default().kind_name(), "unknown");
    }
}
