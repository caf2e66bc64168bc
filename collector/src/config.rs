//! Collector configuration (`collector.toml`, `OUTLIER_COLLECTOR__*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use outlier_common::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityConfig, WorkloadConfig};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// `/metrics` and `/health`.
    pub http_addr: SocketAddr,
    pub kafka: KafkaConfig,
    pub identity: IdentityConfig,
    pub workloads: WorkloadConfig,
    pub capture: CaptureConfig,
    pub spool: SpoolConfig,
    /// Seconds between heartbeats (version, capture mode, drops, backlog);
    /// 0: none. A host whose heartbeats stop shows as silent.
    pub heartbeat_interval_s: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:9103".parse().expect("valid address"),
            kafka: KafkaConfig::default(),
            identity: IdentityConfig::default(),
            workloads: WorkloadConfig::default(),
            capture: CaptureConfig::default(),
            spool: SpoolConfig::default(),
            heartbeat_interval_s: 30,
        }
    }
}

/// How events are captured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// eBPF when the programs load, else the /proc fallback.
    Auto,
    Ebpf,
    Procfs,
}

/// Where in the kernel the eBPF programs capture.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hooks {
    /// `btf` when the kernel has BTF, else the syscall tracepoints.
    Auto,
    /// What the kernel resolved, read from its own objects (the exec's
    /// file and new image, the opened file, the connected socket), plus
    /// io_uring and 32-bit syscalls; refuse to start without kernel BTF.
    Btf,
    /// Syscall tracepoints only (the fallback): arguments as the caller's
    /// memory held them.
    Tracepoints,
}

/// `[capture]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub mode: Mode,
    /// With eBPF: which kernel hooks (docs/collector.md).
    pub hooks: Hooks,
    /// With `btf` hooks on x86-64: capture 32-bit syscalls too (the
    /// x86-64 syscall tracepoints skip them). Costs a check on every
    /// syscall of the host (docs/benchmarks.md).
    pub compat_syscalls: bool,
    /// Capture opens for writing or creating (outside `quiet_paths`).
    pub open_writes: bool,
    /// Path prefixes whose reads are captured (a trailing `/` means the
    /// directory's contents).
    pub sensitive_paths: Vec<String>,
    /// Prefixes, relative to every login's home directory (from
    /// /etc/passwd), whose reads are captured.
    pub sensitive_in_homes: Vec<String>,
    /// Path prefixes whose writes are not captured.
    pub quiet_paths: Vec<String>,
    /// Size of the kernel's ring buffer (rounded up to a power of two).
    pub ring_buffer_bytes: u32,
    /// Most records turned into events per batch.
    pub batch_max: usize,
    /// After a batch, how long the ring buffer is left to fill before the
    /// next read (unless the batch was full): one wake-up per this many ms
    /// instead of one per event, which is what a quiet host's CPU goes to.
    /// It adds at most this much latency.
    pub batch_wait_ms: u64,
    /// How often the /proc fallback looks for new processes and connections.
    pub proc_interval_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Self {
            mode: Mode::Auto,
            hooks: Hooks::Auto,
            compat_syscalls: true,
            open_writes: true,
            sensitive_paths: v(&[
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/security/opasswd",
                "/etc/ssh/ssh_host_",
                "/etc/ssl/private/",
                "/etc/crontab",
                "/etc/cron.d/",
                "/etc/cron.hourly/",
                "/etc/cron.daily/",
                "/etc/cron.weekly/",
                "/etc/cron.monthly/",
                "/var/spool/cron/",
                "/etc/krb5.keytab",
                "/etc/kubernetes/pki/",
                "/var/run/secrets/",
                "/run/secrets/",
                "/etc/ld.so.preload",
            ]),
            sensitive_in_homes: v(&[
                ".ssh/",
                ".bash_history",
                ".zsh_history",
                ".aws/",
                ".kube/",
                ".gnupg/",
                ".docker/config.json",
                ".git-credentials",
                ".netrc",
                ".pgpass",
            ]),
            quiet_paths: v(&[
                "/dev/null",
                "/dev/tty",
                "/dev/pts/",
                "/dev/ptmx",
                "/dev/console",
                "/proc/",
                "/sys/",
            ]),
            ring_buffer_bytes: 16 << 20,
            batch_max: 4096,
            batch_wait_ms: 50,
            proc_interval_ms: 100,
        }
    }
}

/// `[spool]`: the on-disk queue between capture and Kafka.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Past this, the oldest unsent events are dropped (counted, logged).
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/outlier/spool"),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_the_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/collector.toml");
        let cfg: CollectorConfig =
            outlier_common::config::load("OUTLIER_COLLECTOR_EXAMPLE_TEST", Some(&path)).unwrap();
        assert_eq!(cfg, CollectorConfig::default());
    }

    #[test]
    fn a_bad_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[capture]\nmode = \"ebpf\"\nopen_write = false\n").unwrap();
        let err = outlier_common::config::load::<CollectorConfig>(
            "OUTLIER_COLLECTOR_BADKEY",
            Some(&path),
        )
        .unwrap_err();
        let text = outlier_common::config::describe(&err);
        assert!(text.contains("open_write"), "{text}");
        std::fs::write(&path, "[capture]\nmode = \"kernel\"\n").unwrap();
        let err = outlier_common::config::load::<CollectorConfig>(
            "OUTLIER_COLLECTOR_BADKEY",
            Some(&path),
        )
        .unwrap_err();
        assert!(outlier_common::config::describe(&err).contains("capture.mode"));
    }
}
