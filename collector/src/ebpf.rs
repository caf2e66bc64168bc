//! Loading the eBPF programs into the running kernel and reading their ring
//! buffer. The object was built by `build.rs` and is embedded in the binary.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use outlier_collector_common::{
    COMPAT_OFFSETS, DROP_READ_FAILED, DROP_RINGBUF_FULL, DROP_SENDMSG_REPEAT, DROP_STASH,
    HOOK_OFFSETS, OFFSETS, PREFIX_CAP, URING_OFFSETS,
};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::btf::Btf;
use crate::config::{CaptureConfig, Hooks};
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
    #[error("capture.hooks = \"btf\" but {0}")]
    NoHooks(String),
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    #[error("ring buffer: {0}")]
    Io(#[from] io::Error),
}

/// (program, tracepoint, required): optional ones are skipped on kernels
/// without that syscall (openat2 before 5.6, open and creat on arm64).
/// Attached with both hook sets: with `btf`, what these stash at entry is
/// resolved from the kernel's objects at exit.
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
    ("outlier_creat", "sys_enter_creat", false),
    ("outlier_open_exit", "sys_exit_creat", false),
    ("outlier_sendto", "sys_enter_sendto", true),
    ("outlier_sendmsg", "sys_enter_sendmsg", true),
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

/// Where the programs capture, as chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookSet {
    /// From the kernel's objects: exec from `sched_process_exec`'s bprm,
    /// opens and connects resolved from the new fd's file and socket, plus
    /// io_uring completions and 32-bit syscalls (kernel BTF needed).
    Btf,
    /// Syscall tracepoints: arguments as the caller's memory held them.
    Tracepoints,
}

impl HookSet {
    pub fn name(self) -> &'static str {
        match self {
            HookSet::Btf => "btf",
            HookSet::Tracepoints => "tracepoints",
        }
    }
}

/// The device number as the kernel's `super_block.s_dev` holds it
/// (`MKDEV`: major << 20 | minor), from a `stat` st_dev.
fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | minor
}

/// Most identities loaded for one sensitive path (a directory's files).
const INODES_PER_PATH: usize = 512;

/// The identity ([dev, ino]) of every file and directory a sensitive path
/// names now, with its real path: a file (`/etc/shadow`), a directory
/// (`/etc/cron.d/`) with its files and those of its subdirectories (so a
/// hard link or a bind mount of one of them is known), or the files whose
/// name starts with a name prefix (`/etc/ssh/ssh_host_`).
pub fn sensitive_inodes(sensitive: &[String]) -> Vec<([u64; 2], String)> {
    use std::os::unix::fs::MetadataExt;
    let id = |m: &std::fs::Metadata| [kernel_dev(m.dev()), m.ino()];
    let mut out = Vec::new();
    for p in sensitive {
        let base = p.trim_end_matches('/');
        let mut found = Vec::new();
        match std::fs::metadata(base) {
            Ok(m) if m.is_dir() => {
                found.push((id(&m), base.to_string()));
                let mut dirs = vec![(PathBuf::from(base), 0)];
                while let Some((dir, level)) = dirs.pop() {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for e in entries.flatten().take(INODES_PER_PATH) {
                        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                            continue;
                        };
                        if m.is_symlink() {
                            continue;
                        }
                        found.push((id(&m), e.path().display().to_string()));
                        if m.is_dir() && level < 1 {
                            dirs.push((e.path(), level + 1));
                        }
                    }
                }
            }
            Ok(m) => found.push((id(&m), base.to_string())),
            Err(_) if !p.ends_with('/') => {
                // A name prefix: the files of its directory that start with it.
                let path = Path::new(base);
                if let (Some(dir), Some(stem)) = (path.parent(), path.file_name())
                    && let Ok(entries) = std::fs::read_dir(dir)
                {
                    for e in entries.flatten() {
                        if e.file_name()
                            .as_encoded_bytes()
                            .starts_with(stem.as_encoded_bytes())
                            && let Ok(m) = e.metadata()
                        {
                            found.push((id(&m), e.path().display().to_string()));
                        }
                    }
                }
            }
            Err(_) => {}
        }
        found.truncate(INODES_PER_PATH);
        out.extend(found);
    }
    out
}

/// The real path of an open matched by identity `depth` levels below the
/// sensitive file or directory `real`: that path, with the last `depth`
/// components of the path the file was opened by (below a bind-mounted or
/// hard-linked directory the names are the same).
pub fn matched_path(real: &str, depth: u32, opened: &[u8]) -> Option<Vec<u8>> {
    let parts: Vec<&[u8]> = opened
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let depth = depth as usize;
    if depth > parts.len() {
        return None;
    }
    let mut p = real.as_bytes().to_vec();
    for c in &parts[parts.len() - depth..] {
        p.push(b'/');
        p.extend_from_slice(c);
    }
    Some(p)
}

/// Resolves the kernel structure offsets the programs use. `None` when the
/// kernel has no BTF or lacks one of them: the programs then leave ppid,
/// parent name and socket details empty (filled from /proc where possible).
fn kernel_offsets(wanted: &[(&str, &str, &str)]) -> Option<Vec<u32>> {
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
    let mut out = Vec::with_capacity(wanted.len());
    for (_, s, m) in wanted {
        match btf.member_offset(s, m) {
            Ok(o) => out.push(o),
            Err(e) => {
                tracing::warn!(error = %e, "kernel offset not found");
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

/// How often the sensitive paths' identities are looked up again (files
/// created, replaced or removed since).
pub const INODE_REFRESH: Duration = Duration::from_secs(30);

/// Identities the kernel's map holds at most (its size).
const MAX_INODES: usize = 4096;

/// The sensitive paths' identities as loaded into the kernel: the map's
/// value is an index into `real` (which only grows, so a record emitted
/// before a refresh still names the right file).
struct Inodes {
    map: BpfHashMap<MapData, [u64; 2], u32>,
    loaded: Vec<[u64; 2]>,
    real: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
}

impl Inodes {
    /// Loads the sensitive paths' current identities and removes those no
    /// longer current; returns how many there are.
    fn refresh(&mut self, sensitive: &[String]) -> usize {
        let mut now = sensitive_inodes(sensitive);
        now.truncate(MAX_INODES);
        for old in &self.loaded {
            if !now.iter().any(|(k, _)| k == old) {
                let _ = self.map.remove(old);
            }
        }
        self.loaded.clear();
        for (k, real) in now {
            let id = match self.ids.get(&real) {
                Some(id) => *id,
                None if self.real.len() < 16 * MAX_INODES => {
                    let id = self.real.len() as u32;
                    self.ids.insert(real.clone(), id);
                    self.real.push(real);
                    id
                }
                None => continue,
            };
            match self.map.insert(k, id, 0) {
                Ok(()) => self.loaded.push(k),
                Err(e) => tracing::warn!(error = %e, "sensitive inode not loaded"),
            }
        }
        self.loaded.len()
    }
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    loaded: &mut std::collections::HashSet<&'static str>,
    program: &'static str,
    category: &'static str,
    name: &'static str,
    required: bool,
) -> Result<(), LoadError> {
    let exists = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|d| Path::new(d).join(category).join(name).exists());
    if !exists && !required {
        tracing::info!(tracepoint = name, "not on this kernel; skipped");
        return Ok(());
    }
    let attach_err = |error: String| LoadError::Attach {
        program,
        category,
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
    prog.attach(category, name)
        .map_err(|e| attach_err(e.to_string()))?;
    Ok(())
}

/// The loaded, attached programs and their ring buffer.
pub struct Capture {
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    /// Records that did not parse (should be none: a bug, not input).
    pub malformed: u64,
    pub offsets_ok: bool,
    /// Where the programs capture.
    pub hooks: HookSet,
    /// The sensitive paths, in the order their identities are loaded.
    sensitive: Vec<String>,
    inodes: Inodes,
    refreshed: std::time::Instant,
}

impl Capture {
    /// Loads and attaches everything: the `btf` programs when
    /// `capture.hooks` allows and the kernel has BTF, else (or when they
    /// fail to load with `auto`) the syscall tracepoints alone.
    /// RLIMIT_MEMLOCK is not raised (kernels since 5.11 account BPF memory
    /// to the cgroup).
    pub fn load(cfg: &CaptureConfig) -> Result<Self, LoadError> {
        if object().is_empty() {
            return Err(LoadError::NotBuilt);
        }
        ensure_tracefs()?;
        let offsets = kernel_offsets(&OFFSETS);
        let hook_offsets = || -> Result<Vec<u32>, String> {
            if offsets.is_none() {
                return Err("kernel BTF offsets are missing".into());
            }
            kernel_offsets(&HOOK_OFFSETS).ok_or_else(|| "kernel BTF offsets are missing".into())
        };
        match cfg.hooks {
            Hooks::Tracepoints => Self::load_with(cfg, offsets, None),
            Hooks::Btf => {
                let h = hook_offsets().map_err(LoadError::NoHooks)?;
                Self::load_with(cfg, offsets, Some(h))
            }
            Hooks::Auto => match hook_offsets() {
                Ok(h) => match Self::load_with(cfg, offsets.clone(), Some(h)) {
                    Ok(c) => Ok(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "btf hooks failed to load; using the syscall tracepoints");
                        Self::load_with(cfg, offsets, None)
                    }
                },
                Err(why) => {
                    tracing::warn!(reason = %why, "btf hooks unavailable; using the syscall tracepoints");
                    Self::load_with(cfg, offsets, None)
                }
            },
        }
    }

    fn load_with(
        cfg: &CaptureConfig,
        offsets: Option<Vec<u32>>,
        hook_offsets: Option<Vec<u32>>,
    ) -> Result<Self, LoadError> {
        let offsets_ok = offsets.is_some();
        let offsets = offsets.unwrap_or_else(|| vec![0; OFFSETS.len()]);
        let hooks = if hook_offsets.is_some() {
            HookSet::Btf
        } else {
            HookSet::Tracepoints
        };
        let hook_offsets = hook_offsets.unwrap_or_else(|| vec![0; HOOK_OFFSETS.len()]);
        // Optional parts of the btf hooks.
        let btf = hooks == HookSet::Btf;
        let uring = kernel_offsets(&URING_OFFSETS).filter(|_| {
            btf && Path::new("/sys/kernel/tracing/events/io_uring/io_uring_complete").exists()
        });
        let compat = kernel_offsets(&COMPAT_OFFSETS).filter(|_| {
            btf && cfg!(target_arch = "x86_64")
                && cfg.compat_syscalls
                && Path::new("/sys/kernel/tracing/events/raw_syscalls/sys_enter").exists()
        });
        let self_tgid = std::process::id();
        let [open_writes, ok, hooks_on, uring_on] =
            [cfg.open_writes, offsets_ok, btf, uring.is_some()].map(u32::from);
        let ring_bytes = cfg.ring_buffer_bytes.next_power_of_two().max(1 << 16);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("SELF_TGID", &self_tgid, true)
            .override_global("OPEN_WRITES", &open_writes, true)
            .override_global("OFFSETS_OK", &ok, true)
            .override_global("HOOKS", &hooks_on, true)
            .override_global("URING", &uring_on, true)
            .map_max_entries("EVENTS", ring_bytes);
        let uring_offsets = uring
            .clone()
            .unwrap_or_else(|| vec![0; URING_OFFSETS.len()]);
        let compat_offsets = compat
            .clone()
            .unwrap_or_else(|| vec![0; COMPAT_OFFSETS.len()]);
        for ((global, _, _), value) in OFFSETS
            .iter()
            .zip(&offsets)
            .chain(HOOK_OFFSETS.iter().zip(&hook_offsets))
            .chain(URING_OFFSETS.iter().zip(&uring_offsets))
            .chain(COMPAT_OFFSETS.iter().zip(&compat_offsets))
        {
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
        let mut inodes = Inodes {
            map: BpfHashMap::try_from(
                ebpf.take_map("SENSITIVE_INODES")
                    .ok_or_else(|| LoadError::Map("SENSITIVE_INODES", "missing".into()))?,
            )
            .map_err(|e| LoadError::Map("SENSITIVE_INODES", e.to_string()))?,
            loaded: Vec::new(),
            real: Vec::new(),
            ids: std::collections::HashMap::new(),
        };
        let n_inodes = inodes.refresh(&sensitive);

        let mut loaded = std::collections::HashSet::new();
        for &(program, name, required) in ATTACH {
            attach_tracepoint(&mut ebpf, &mut loaded, program, "syscalls", name, required)?;
        }
        if btf {
            let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::NoHooks(e.to_string()))?;
            let (program, name) = ("outlier_exec_btf", "sched_process_exec");
            let attach_err = |error: String| LoadError::Attach {
                program,
                category: "tp_btf",
                name,
                error,
            };
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| attach_err("program missing from the object".into()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(e.to_string()))?;
            prog.load(name, &btf)
                .map_err(|e| attach_err(format!("{e:?}")))?;
            prog.attach().map_err(|e| attach_err(e.to_string()))?;
        } else {
            let p = "outlier_sched_exec";
            attach_tracepoint(
                &mut ebpf,
                &mut loaded,
                p,
                "sched",
                "sched_process_exec",
                true,
            )?;
        }
        if uring.is_some() {
            let p = "outlier_uring_complete";
            attach_tracepoint(
                &mut ebpf,
                &mut loaded,
                p,
                "io_uring",
                "io_uring_complete",
                true,
            )?;
        }
        if compat.is_some() {
            for (p, name) in [
                ("outlier_compat_enter", "sys_enter"),
                ("outlier_compat_exit", "sys_exit"),
            ] {
                attach_tracepoint(&mut ebpf, &mut loaded, p, "raw_syscalls", name, true)?;
            }
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
            hooks = hooks.name(),
            io_uring = uring.is_some(),
            compat_syscalls = compat.is_some(),
            sensitive_prefixes = sensitive.len(),
            sensitive_inodes = n_inodes,
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
            hooks,
            sensitive,
            inodes,
            refreshed: std::time::Instant::now(),
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
        if self.refreshed.elapsed() >= INODE_REFRESH {
            self.refreshed = std::time::Instant::now();
            self.inodes.refresh(&self.sensitive);
        }
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            match records::parse(&item) {
                Ok(Raw::Open(mut o)) => {
                    if let Some((id, depth)) = o.inode_match.take()
                        && let Some(real) = self.inodes.real.get(id as usize)
                        && let Some(p) = matched_path(real, depth, &o.path)
                    {
                        // Seen through another name: the event names the
                        // real file.
                        o.path = p;
                    }
                    out.push(Raw::Open(o));
                }
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

    /// Records the kernel side lost or left out, by reason, summed over
    /// CPUs (the `reason` label of `outlier_collector_kernel_drops_total`).
    pub fn kernel_drops(&self) -> [(&'static str, u64); 4] {
        let sum = |slot: u32| {
            self.drops
                .get(&slot, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        [
            ("ringbuf_full", sum(DROP_RINGBUF_FULL)),
            ("read_failed", sum(DROP_READ_FAILED)),
            ("stash_full", sum(DROP_STASH)),
            ("sendmsg_repeat", sum(DROP_SENDMSG_REPEAT)),
        ]
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
    fn device_numbers_are_the_kernels() {
        // glibc's st_dev for 8:1 (sda1) and 259:3 (nvme0n1p3).
        assert_eq!(kernel_dev((8 << 8) | 1), (8 << 20) | 1);
        assert_eq!(kernel_dev((259 << 8) | 3), (259 << 20) | 3);
        // Minor numbers above 255 are split in st_dev.
        assert_eq!(
            kernel_dev((0x1200 << 12) | (7 << 8) | 0x34),
            (7 << 20) | 0x1234
        );
    }

    #[test]
    fn sensitive_identities_cover_directories_files_and_name_prefixes() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("cron.d/sub")).unwrap();
        std::fs::write(root.join("cron.d/job"), "").unwrap();
        std::fs::write(root.join("cron.d/sub/deep"), "").unwrap();
        std::fs::write(root.join("shadow"), "").unwrap();
        std::fs::write(root.join("ssh_host_rsa_key"), "").unwrap();
        std::fs::write(root.join("ssh_config"), "").unwrap();
        let p = |s: &str| root.join(s).display().to_string();
        let sensitive = vec![
            format!("{}/", p("cron.d")),
            p("shadow"),
            p("ssh_host_"),
            p("missing"),
        ];
        let got = sensitive_inodes(&sensitive);
        let id = |s: &str| {
            let m = std::fs::metadata(root.join(s)).unwrap();
            [kernel_dev(m.dev()), m.ino()]
        };
        for f in [
            "cron.d",
            "cron.d/job",
            "cron.d/sub",
            "cron.d/sub/deep",
            "shadow",
            "ssh_host_rsa_key",
        ] {
            assert!(
                got.contains(&(id(f), p(f))),
                "{f} is known by identity: {got:?}"
            );
        }
        assert!(!got.iter().any(|(k, _)| *k == id("ssh_config")), "{got:?}");
        assert_eq!(got.len(), 6, "{got:?}");
    }

    #[test]
    fn a_match_by_identity_names_the_real_file() {
        let m = |real, depth, opened: &str| {
            matched_path(real, depth, opened.as_bytes()).map(|p| String::from_utf8(p).unwrap())
        };
        // A hard link or a bind-mounted file: the file itself.
        assert_eq!(
            m("/etc/shadow", 0, "/tmp/x").as_deref(),
            Some("/etc/shadow")
        );
        // A bind-mounted directory: the names below it are the same.
        assert_eq!(
            m("/etc/cron.d", 1, "/mnt/innocent/job").as_deref(),
            Some("/etc/cron.d/job")
        );
        assert_eq!(
            m("/root/.ssh", 2, "/mnt/k/sub/id_rsa").as_deref(),
            Some("/root/.ssh/sub/id_rsa")
        );
        assert_eq!(m("/root/.ssh", 3, "/a/b"), None);
    }

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
