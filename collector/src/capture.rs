//! From captured records to v1 events: identity (org, host, workload),
//! wall-clock time, the acting process's executable and working directory,
//! argv bounded with a truncation flag, and bytes that are not UTF-8 kept
//! as `\xNN` escapes (never dropped).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outlier_common::json::{MAX_ARGS, MAX_ARGV_BYTES, MAX_PATH_BYTES};
use outlier_proto::{AddressFamily, Connect, Event, Exec, Open, Protocol, event::Detail};

use crate::identity::{self, Cgroups, Resolver, Subject};
use crate::records::{Raw, RawConnect, RawExec, RawHeader, RawOpen};

/// Renders bytes as text: valid UTF-8 as is, every other byte as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Bounds argv to [`MAX_ARGS`] arguments and [`MAX_ARGV_BYTES`] bytes (of
/// the escaped text), flagging any cut.
pub fn bound_args(args: &[Vec<u8>]) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(args.len().min(MAX_ARGS));
    let mut budget = MAX_ARGV_BYTES;
    for a in args {
        if out.len() == MAX_ARGS {
            return (out, true);
        }
        let s = escape_bytes(a);
        if s.len() > budget {
            let (cut, _) = outlier_common::json::bound_str(s, budget);
            out.push(cut);
            return (out, true);
        }
        budget -= s.len();
        out.push(s);
    }
    (out, false)
}

/// Nanoseconds between CLOCK_MONOTONIC (kernel timestamps) and the wall
/// clock, refreshed every few seconds to follow clock adjustments.
pub struct Clock {
    offset_ns: i128,
    at: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            offset_ns: Self::measure(),
            at: Instant::now(),
        }
    }

    fn measure() -> i128 {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .unwrap_or(0);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        wall - mono
    }

    /// Wall-clock nanoseconds of a CLOCK_MONOTONIC timestamp.
    pub fn wall_ns(&mut self, ktime_ns: u64) -> u64 {
        if self.at.elapsed() > Duration::from_secs(5) {
            self.offset_ns = Self::measure();
            self.at = Instant::now();
        }
        u64::try_from(i128::from(ktime_ns) + self.offset_ns).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What the collector remembers of a process.
#[derive(Debug, Clone, Default)]
struct Proc {
    exe: String,
    cgroup: String,
    workload: String,
    /// The cgroup v2 id the entry was made under: a record from another
    /// cgroup under the same pid is another process (the pid was reused
    /// by a process that forked and never exec'd, say a web server's
    /// worker), not this one.
    cgroup_id: u64,
}

/// Most processes remembered before the table is reset.
const PROCS_MAX: usize = 65_536;

/// Turns records into events. One per capture loop.
pub struct Builder {
    pub org: String,
    pub host: String,
    source: &'static str,
    resolver: Resolver,
    cgroups: Cgroups,
    procs: HashMap<u32, Proc>,
    pub clock: Clock,
}

fn readlink(pid: u32, what: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/{what}"))
        .map(|p| escape_bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())))
        .unwrap_or_default()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Builder {
    pub fn new(org: String, host: String, source: &'static str, resolver: Resolver) -> Self {
        Self {
            org,
            host,
            source,
            resolver,
            cgroups: Cgroups::new(),
            procs: HashMap::new(),
            clock: Clock::new(),
        }
    }

    /// The cgroup path of a process: from its cgroup v2 id when that names
    /// something more specific than the root, else from /proc.
    fn cgroup_of(&mut self, tgid: u32, cgroup_id: u64) -> String {
        let p = if cgroup_id != 0 {
            self.cgroups.path(cgroup_id)
        } else {
            String::new()
        };
        if p.is_empty() || p == "/" {
            identity::proc_cgroup(tgid).unwrap_or(p)
        } else {
            p
        }
    }

    fn proc_entry(&mut self, h: &RawHeader, comm: &str, exec_path: Option<&str>) -> Proc {
        if self.procs.len() >= PROCS_MAX {
            self.procs.clear();
        }
        if let Some(exe) = exec_path {
            // A new program: everything about the process may have changed.
            let cgroup = self.cgroup_of(h.tgid, h.cgroup_id);
            let workload = self.resolver.resolve(&Subject {
                cgroup: &cgroup,
                comm,
            });
            let p = Proc {
                exe: exe.to_string(),
                cgroup,
                workload,
                cgroup_id: h.cgroup_id,
            };
            self.procs.insert(h.tgid, p.clone());
            return p;
        }
        if let Some(p) = self.procs.get(&h.tgid)
            && p.cgroup_id == h.cgroup_id
        {
            return p.clone();
        }
        let cgroup = self.cgroup_of(h.tgid, h.cgroup_id);
        let workload = self.resolver.resolve(&Subject {
            cgroup: &cgroup,
            comm,
        });
        let p = Proc {
            exe: readlink(h.tgid, "exe"),
            cgroup,
            workload,
            cgroup_id: h.cgroup_id,
        };
        self.procs.insert(h.tgid, p.clone());
        p
    }

    /// Forgets a process (it exited, or its pid was reused).
    pub fn forget(&mut self, tgid: u32) {
        self.procs.remove(&tgid);
    }

    fn base(&mut self, h: &RawHeader, exec_path: Option<&str>) -> Event {
        let comm = escape_bytes(&h.comm);
        let p = self.proc_entry(h, &comm, exec_path);
        Event {
            event_id: new_id(),
            org: self.org.clone(),
            workload: p.workload,
            host: self.host.clone(),
            ts_ns: self.clock.wall_ns(h.ktime_ns),
            pid: h.tgid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            comm,
            parent_comm: escape_bytes(&h.pcomm),
            exe: p.exe,
            cgroup: p.cgroup,
            source: self.source.to_string(),
            detail: None,
        }
    }

    pub fn build(&mut self, raw: &Raw) -> Event {
        match raw {
            Raw::Exec(e) => self.exec(e),
            Raw::Connect(c) => self.connect(c),
            Raw::Open(o) => self.open(o),
        }
    }

    fn exec(&mut self, e: &RawExec) -> Event {
        let filename = escape_bytes(&e.filename);
        let cwd = if e.retval == 0 {
            readlink(e.hdr.tgid, "cwd")
        } else {
            String::new()
        };
        // The executable: what the kernel resolved (the security hooks),
        // else the filename when absolute, else the /proc link (while the
        // process still exists).
        let exe = if e.retval != 0 {
            None
        } else if e.resolved || filename.starts_with('/') {
            Some(filename.clone())
        } else {
            let l = readlink(e.hdr.tgid, "exe");
            Some(if l.is_empty() { filename.clone() } else { l })
        };
        let mut ev = self.base(&e.hdr, exe.as_deref());
        if e.retval != 0 {
            ev.exe = filename;
        }
        let (argv, cut) = bound_args(&e.args);
        ev.detail = Some(Detail::Exec(Exec {
            argc: e.argc.max(argv.len() as u32),
            argv_truncated: cut || e.args_truncated || e.args_fault,
            argv,
            cwd,
            retval: Some(e.retval),
        }));
        ev
    }

    fn connect(&mut self, c: &RawConnect) -> Event {
        let mut ev = self.base(&c.hdr, None);
        let family = match c.remote {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        // An IPv4 peer reached through an IPv6 socket reads as ::ffff:a.b.c.d.
        let show = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
            v4 => v4.to_string(),
        };
        ev.detail = Some(Detail::Connect(Connect {
            family: family as i32,
            remote_ip: show(c.remote),
            remote_port: u32::from(c.port),
            local_ip: c.local.map(show).unwrap_or_default(),
            local_port: u32::from(c.local_port),
            protocol: match c.sock_type {
                1 => Protocol::Tcp,
                2 => Protocol::Udp,
                _ => Protocol::Unspecified,
            } as i32,
            // A datagram's send is reported before its result.
            retval: (!c.no_retval).then_some(c.retval),
        }));
        ev
    }

    fn open(&mut self, o: &RawOpen) -> Event {
        let mut ev = self.base(&o.hdr, None);
        let (path, cut) = outlier_common::json::bound_str(escape_bytes(&o.path), MAX_PATH_BYTES);
        ev.detail = Some(Detail::Open(Open {
            path,
            path_truncated: cut || o.path_truncated,
            flags: o.flags,
            retval: Some(o.retval),
        }));
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{WorkloadConfig, WorkloadRule};

    #[test]
    fn escaping_keeps_every_byte() {
        assert_eq!(escape_bytes(b"plain"), "plain");
        assert_eq!(escape_bytes("héllo".as_bytes()), "héllo");
        assert_eq!(escape_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
    }

    #[test]
    fn argv_is_bounded_with_a_flag() {
        let many: Vec<Vec<u8>> = (0..100).map(|i| format!("a{i}").into_bytes()).collect();
        let (a, cut) = bound_args(&many);
        assert_eq!((a.len(), cut), (MAX_ARGS, true));
        let long = vec![vec![b'x'; 3000], vec![b'y'; 3000]];
        let (a, cut) = bound_args(&long);
        assert!(cut);
        assert_eq!(a.iter().map(String::len).sum::<usize>(), MAX_ARGV_BYTES);
        let (a, cut) = bound_args(&[b"ls".to_vec(), b"-l".to_vec()]);
        assert_eq!((a, cut), (vec!["ls".to_string(), "-l".to_string()], false));
    }

    fn header(tgid: u32) -> RawHeader {
        RawHeader {
            tgid,
            tid: tgid,
            ppid: 1,
            uid: 0,
            gid: 0,
            ktime_ns: 1_000,
            cgroup_id: 0,
            comm: b"sleep".to_vec(),
            pcomm: b"bash".to_vec(),
        }
    }

    #[test]
    fn exec_events_carry_identity_and_bounded_escaped_argv() {
        let resolver = Resolver::new(&WorkloadConfig {
            default: "host".into(),
            rules: vec![WorkloadRule {
                comm: Some("sle*".into()),
                workload: "sleepers".into(),
                ..Default::default()
            }],
        })
        .unwrap();
        let mut b = Builder::new("acme".into(), "web-1".into(), "ebpf", resolver);
        let me = std::process::id();
        let ev = b.build(&Raw::Exec(RawExec {
            hdr: header(me),
            retval: 0,
            argc: 3,
            args: vec![b"sleep".to_vec(), b"1 2".to_vec(), b"\xfe".to_vec()],
            args_truncated: false,
            args_fault: false,
            filename: b"/usr/bin/sleep".to_vec(),
            filename_truncated: false,
            execveat: false,
            resolved: false,
        }));
        assert_eq!(
            (ev.org.as_str(), ev.host.as_str(), ev.workload.as_str()),
            ("acme", "web-1", "sleepers")
        );
        assert_eq!(ev.exe, "/usr/bin/sleep");
        assert_eq!(ev.source, "ebpf");
        assert_eq!(
            (ev.comm.as_str(), ev.parent_comm.as_str()),
            ("sleep", "bash")
        );
        let Some(Detail::Exec(x)) = ev.detail else {
            panic!()
        };
        assert_eq!(x.argv, ["sleep", "1 2", "\\xfe"]);
        assert_eq!((x.argc, x.argv_truncated, x.retval), (3, false, Some(0)));
        // Our own cwd, read from /proc for the (live) process.
        assert_eq!(
            x.cwd,
            std::env::current_dir().unwrap().to_string_lossy().as_ref()
        );
        // Later events of the process reuse what the exec established.
        let ev = b.build(&Raw::Open(RawOpen {
            hdr: header(me),
            retval: 3,
            flags: 0,
            dfd: -100,
            path: b"/etc/shadow".to_vec(),
            path_truncated: false,
            sensitive: true,
            openat2: false,
            inode_match: None,
        }));
        assert_eq!(
            (ev.exe.as_str(), ev.workload.as_str()),
            ("/usr/bin/sleep", "sleepers")
        );
        // The same pid in another cgroup is another process (the pid was
        // reused by one that never exec'd): not the sleeper's workload.
        let other = RawHeader {
            cgroup_id: 987_654_321,
            comm: b"php-fpm8.2".to_vec(),
            ..header(me)
        };
        let ev = b.build(&Raw::Open(RawOpen {
            hdr: other,
            retval: 3,
            flags: 0o1101,
            dfd: -100,
            path: b"/srv/app/uploads/x".to_vec(),
            path_truncated: false,
            sensitive: false,
            openat2: false,
            inode_match: None,
        }));
        assert_eq!(ev.workload, "host");
        assert_ne!(ev.exe, "/usr/bin/sleep");
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let mut c = Clock::new();
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        let k = mono.tv_sec() as u64 * 1_000_000_000 + mono.tv_nsec() as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let got = c.wall_ns(k);
        assert!(got.abs_diff(wall) < 50_000_000, "{got} vs {wall}");
    }
}
