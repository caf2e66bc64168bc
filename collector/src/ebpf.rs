//! Loading the eBPF programs into the running kernel and reading their ring
//! buffer. The object was built by `build.rs` and is embedded in the binary.

use std::io;
use std::path::Path;
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use outlier_collector_common::{DROP_READ_FAILED, DROP_RINGBUF_FULL, OFFSETS, PREFIX_CAP};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::btf::Btf;
use crate::config::CaptureConfig;
use crate::records::{self, Raw};

/// The programs, for bpfel, or empty when the binary was built without the
/// eBPF toolchain.
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/outlier-collector-ebpf"))
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("this collector was built without its eBPF programs")]
    NotBuilt,
    #[error("tracefs is not mounted and could not be mounted: {0}")]
    Tracefs(String),
    #[error("loading the eBPF object: {0}")]
    Load(String),
    #[error("attaching {program} to {category}:{name}: {error}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        error: String,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    #[error("ring buffer: {0}")]
    Io(#[from] io::Error),
}

/// (program, tracepoint, required): optional ones are skipped on kernels
/// without that syscall (openat2 before 5.6, open on arm64).
const ATTACH: &[(&str, &str, bool)] = &[
    ("outlier_execve", "sys_enter_execve", true),
    ("outlier_execveat", "sys_enter_execveat", true),
    ("outlier_exec_exit", "sys_exit_execve", true),
    ("outlier_exec_exit", "sys_exit_execveat", true),
    ("outlier_connect", "sys_enter_connect", true),
    ("outlier_connect_exit", "sys_exit_connect", true),
    ("outlier_openat", "sys_enter_openat", true),
    ("outlier_open_exit", "sys_exit_openat", true),
    ("outlier_openat2", "sys_enter_openat2", false),
    ("outlier_open_exit", "sys_exit_openat2", false),
    ("outlier_open", "sys_enter_open", false),
    ("outlier_open_exit", "sys_exit_open", false),
];

/// Mounts tracefs at /sys/kernel/tracing when it is not there (tracepoint
/// ids are read from it; aya remembers a missing tracefs for good, so this
/// must run before the first attach).
fn ensure_tracefs() -> Result<(), LoadError> {
    let has = |p: &str| {
        std::fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    if has("/sys/kernel/tracing") || has("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    nix::mount::mount(
        Some("nodev"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| LoadError::Tracefs(e.to_string()))?;
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// Resolves the kernel structure offsets the programs use. `None` when the
/// kernel has no BTF or lacks one of them: the programs then leave ppid,
/// parent name and socket details empty (filled from /proc where possible).
fn kernel_offsets() -> Option<Vec<u32>> {
    let btf = match Btf::from_sys_fs() {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "kernel BTF unreadable");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "no kernel BTF (/sys/kernel/btf/vmlinux)");
            return None;
        }
    };
    let mut out = Vec::with_capacity(OFFSETS.len());
    for (_, s, m) in OFFSETS {
        match btf.member_offset(s, m) {
            Ok(o) => out.push(o),
            Err(e) => {
                tracing::warn!(error = %e, "kernel offset not found; parent and socket details come from /proc");
                return None;
            }
        }
    }
    Some(out)
}

/// Expands the sensitive-path settings: absolute prefixes as they are, and
/// per-home entries for every home directory in /etc/passwd.
pub fn sensitive_prefixes(cfg: &CaptureConfig, passwd: &str) -> Vec<String> {
    let mut out: Vec<String> = cfg.sensitive_paths.clone();
    let mut homes: Vec<&str> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            let home = *f.get(5)?;
            (home.starts_with('/') && home != "/" && (uid == 0 || uid >= 1000)).then_some(home)
        })
        .collect();
    homes.sort_unstable();
    homes.dedup();
    for h in homes {
        for rel in &cfg.sensitive_in_homes {
            out.push(format!("{}/{}", h.trim_end_matches('/'), rel));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn prefix_key(p: &str) -> Key<[u8; PREFIX_CAP]> {
    let mut data = [0u8; PREFIX_CAP];
    let n = p.len().min(PREFIX_CAP);
    data[..n].copy_from_slice(&p.as_bytes()[..n]);
    Key::new((n * 8) as u32, data)
}

/// The loaded, attached programs and their ring buffer.
pub struct Capture {
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    /// Records that did not parse (should be none: a bug, not input).
    pub malformed: u64,
    pub offsets_ok: bool,
}

impl Capture {
    /// Loads and attaches everything. RLIMIT_MEMLOCK is not raised (kernels
    /// since 5.11 account BPF memory to the cgroup instead).
    pub fn load(cfg: &CaptureConfig) -> Result<Self, LoadError> {
        if object().is_empty() {
            return Err(LoadError::NotBuilt);
        }
        ensure_tracefs()?;
        let offsets = kernel_offsets();
        let offsets_ok = offsets.is_some();
        let offsets = offsets.unwrap_or_else(|| vec![0; OFFSETS.len()]);
        let self_tgid = std::process::id();
        let open_writes = u32::from(cfg.open_writes);
        let ok = u32::from(offsets_ok);
        let ring_bytes = cfg.ring_buffer_bytes.next_power_of_two().max(1 << 16);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("SELF_TGID", &self_tgid, true)
            .override_global("OPEN_WRITES", &open_writes, true)
            .override_global("OFFSETS_OK", &ok, true)
            .map_max_entries("EVENTS", ring_bytes);
        for ((global, _, _), value) in OFFSETS.iter().zip(&offsets) {
            loader.override_global(global, value, true);
        }
        let mut ebpf = loader
            .load(object())
            .map_err(|e| LoadError::Load(format!("{e:?}")))?;

        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let sensitive = sensitive_prefixes(cfg, &passwd);
        for (map, prefixes) in [("SENSITIVE", &sensitive), ("QUIET", &cfg.quiet_paths)] {
            let m = ebpf
                .map_mut(map)
                .ok_or_else(|| LoadError::Map(map, "missing".into()))?;
            let mut trie: LpmTrie<&mut MapData, [u8; PREFIX_CAP], u8> =
                LpmTrie::try_from(m).map_err(|e| LoadError::Map(map, e.to_string()))?;
            for p in prefixes {
                trie.insert(&prefix_key(p), 1, 0)
                    .map_err(|e| LoadError::Map(map, format!("{p}: {e}")))?;
            }
        }

        let mut loaded = std::collections::HashSet::new();
        for &(program, name, required) in ATTACH {
            let exists = Path::new("/sys/kernel/tracing/events/syscalls")
                .join(name)
                .exists()
                || Path::new("/sys/kernel/debug/tracing/events/syscalls")
                    .join(name)
                    .exists();
            if !exists && !required {
                tracing::info!(tracepoint = name, "not on this kernel; skipped");
                continue;
            }
            let attach_err = |error: String| LoadError::Attach {
                program,
                category: "syscalls",
                name,
                error,
            };
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| attach_err("program missing from the object".into()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(e.to_string()))?;
            if loaded.insert(program) {
                prog.load().map_err(|e| attach_err(format!("{e:?}")))?;
            }
            prog.attach("syscalls", name)
                .map_err(|e| attach_err(e.to_string()))?;
        }

        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| LoadError::Map("EVENTS", "missing".into()))?,
        )
        .map_err(|e| LoadError::Map("EVENTS", e.to_string()))?;
        let drops = PerCpuArray::try_from(
            ebpf.take_map("DROPS")
                .ok_or_else(|| LoadError::Map("DROPS", "missing".into()))?,
        )
        .map_err(|e| LoadError::Map("DROPS", e.to_string()))?;
        let ring = register(ring)?;
        tracing::info!(
            sensitive_prefixes = sensitive.len(),
            quiet_prefixes = cfg.quiet_paths.len(),
            ring_buffer_bytes = ring_bytes,
            kernel_offsets = offsets_ok,
            "eBPF programs attached"
        );
        Ok(Self {
            _ebpf: ebpf,
            ring,
            drops,
            malformed: 0,
            offsets_ok,
        })
    }

    /// Drains up to `max` records into `out`, waiting (at most `tick`) for
    /// some only when the ring is empty. The kernel wakes a reader only
    /// when it had caught up, so records left behind by a full batch (or
    /// written while the reader let the ring fill) are read without
    /// waiting for a wake-up that will not come.
    pub async fn read(&mut self, out: &mut Vec<Raw>, max: usize, tick: Duration) -> io::Result<()> {
        if self.drain(out, max) > 0 {
            return Ok(());
        }
        // Readiness was cleared before the last drain; a record committed
        // since the ring went empty has set it again.
        tokio::select! {
            guard = self.ring.readable_mut() => guard?.clear_ready(),
            () = tokio::time::sleep(tick) => {}
        }
        self.drain(out, max);
        Ok(())
    }

    /// Takes up to `max` records that are in the ring now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Raw>, max: usize) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            match records::parse(&item) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.malformed += 1;
                    tracing::error!(error = %e, "malformed ring buffer record");
                }
            }
            n += 1;
        }
        n
    }

    /// Records the kernel side lost: (ring buffer full, user-memory read
    /// failed), summed over CPUs.
    pub fn kernel_drops(&self) -> (u64, u64) {
        let sum = |slot: u32| {
            self.drops
                .get(&slot, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        (sum(DROP_RINGBUF_FULL), sum(DROP_READ_FAILED))
    }
}

/// Registers the ring buffer's fd with the runtime.
#[allow(unsafe_code)]
fn register(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the fd is owned by `ring`, which the AsyncFd owns for as long
    // as it is registered; nothing else closes it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_prefixes_cover_every_login_home() {
        let cfg = CaptureConfig {
            sensitive_paths: vec!["/etc/shadow".into()],
            sensitive_in_homes: vec![".ssh/".into(), ".bash_history".into()],
            ..CaptureConfig::default()
        };
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      alice:x:1000:1000::/home/alice/:/bin/bash\n\
                      nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n";
        let p = sensitive_prefixes(&cfg, passwd);
        assert!(p.contains(&"/etc/shadow".to_string()));
        assert!(p.contains(&"/root/.ssh/".to_string()));
        assert!(p.contains(&"/home/alice/.bash_history".to_string()));
        assert!(!p.iter().any(|x| x.starts_with("/usr/sbin")), "{p:?}");
    }
}
