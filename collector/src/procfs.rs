//! The /proc fallback for hosts where the eBPF programs cannot load: polls
//! /proc for new processes (and programs a process switched to) and
//! /proc/net/{tcp,tcp6,udp,udp6} for new outbound connections.
//!
//! It sees what exists at each poll, so anything that starts and ends
//! between two polls (default 100 ms) is missed, and file opens are not
//! seen at all; only the host's network namespace is read. The eBPF
//! programs have none of these limits.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::records::{Raw, RawConnect, RawExec, RawHeader};

/// What identifies one process: its pid and start time (pids are reused).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    start: u64,
    exe: String,
}

/// Fields of /proc/PID/stat we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: Vec<u8>,
    pub ppid: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

/// Parses /proc/PID/stat. The name is in parentheses and may itself hold
/// spaces and parentheses, so the fields are read after the last `)`.
pub fn parse_stat(b: &[u8]) -> Option<Stat> {
    let open = b.iter().position(|&c| c == b'(')?;
    let close = b.iter().rposition(|&c| c == b')')?;
    let comm = b.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(b.get(close + 2..)?).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... starttime(19).
    Some(Stat {
        comm,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Real uid and gid from /proc/PID/status.
pub fn parse_ids(status: &str) -> (u32, u32) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Uid:"), field("Gid:"))
}

/// A socket from a /proc/net table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_SYN_SENT: u8 = 0x02;
const TCP_LISTEN: u8 = 0x0a;

fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(a, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            // Four 32-bit words, each in host (little-endian) order.
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&a[8 * i..8 * i + 8], 16).ok()?;
                bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Parses a /proc/net/{tcp,tcp6,udp,udp6} table.
pub fn parse_net(text: &str) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, local_port) = parse_addr(f.get(1)?)?;
            let (remote, remote_port) = parse_addr(f.get(2)?)?;
            Some(Socket {
                local,
                local_port,
                remote,
                remote_port,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Clock ticks per second for /proc start times (USER_HZ).
const USER_HZ: u64 = 100;

/// Polls /proc. The first poll only learns what already runs.
pub struct Scanner {
    known: HashMap<u32, Known>,
    seen_sockets: HashSet<u64>,
    inode_pid: HashMap<u64, u32>,
    self_pid: u32,
    boot_to_mono_ns: i128,
    primed: bool,
}

fn read(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn args_of(pid: u32) -> Vec<Vec<u8>> {
    let Some(b) = read(&format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    let mut args: Vec<Vec<u8>> = b.split(|&c| c == 0).map(<[u8]>::to_vec).collect();
    if b.last() == Some(&0) {
        args.pop();
    }
    args
}

impl Scanner {
    pub fn new() -> Self {
        // Start times count from boot (CLOCK_BOOTTIME); events carry
        // CLOCK_MONOTONIC, which stops during suspend.
        let ns = |id| {
            nix::time::clock_gettime(id)
                .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
                .unwrap_or(0)
        };
        Self {
            known: HashMap::new(),
            seen_sockets: HashSet::new(),
            inode_pid: HashMap::new(),
            self_pid: std::process::id(),
            boot_to_mono_ns: ns(nix::time::ClockId::CLOCK_MONOTONIC)
                - ns(nix::time::ClockId::CLOCK_BOOTTIME),
            primed: false,
        }
    }

    fn header(&self, pid: u32, stat: &Stat) -> RawHeader {
        let (uid, gid) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| parse_ids(&s))
            .unwrap_or((0, 0));
        let pcomm = read(&format!("/proc/{}/comm", stat.ppid))
            .map(|mut c| {
                if c.last() == Some(&b'\n') {
                    c.pop();
                }
                c
            })
            .unwrap_or_default();
        let ktime =
            i128::from(stat.start) * (1_000_000_000 / USER_HZ as i128) + self.boot_to_mono_ns;
        RawHeader {
            tgid: pid,
            tid: pid,
            ppid: stat.ppid,
            uid,
            gid,
            ktime_ns: u64::try_from(ktime).unwrap_or(0),
            cgroup_id: 0,
            comm: stat.comm.clone(),
            pcomm,
        }
    }

    /// One poll: appends new processes (as exec records) and new outbound
    /// connections to `out`.
    pub fn poll(&mut self, out: &mut Vec<Raw>) {
        let mut alive = HashSet::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable(); // parents (usually) before children
        let mut fresh: Vec<(u32, Stat, String)> = Vec::new();
        for pid in pids {
            if pid == self.self_pid {
                continue;
            }
            let Some(stat) = read(&format!("/proc/{pid}/stat")).and_then(|b| parse_stat(&b)) else {
                continue;
            };
            // Kernel threads: children of kthreadd, or kthreadd itself.
            if stat.ppid == 2 || pid == 2 {
                continue;
            }
            alive.insert(pid);
            let exe = exe_of(pid);
            match self.known.get(&pid) {
                Some(k) if k.start == stat.start && k.exe == exe => continue,
                _ => {}
            }
            self.known.insert(
                pid,
                Known {
                    start: stat.start,
                    exe: exe.clone(),
                },
            );
            if self.primed && !exe.is_empty() {
                fresh.push((pid, stat, exe));
            }
        }
        self.known.retain(|pid, _| alive.contains(pid));
        for (pid, stat, exe) in fresh {
            let args = args_of(pid);
            // A fork that has not exec'd looks like its parent: not an exec.
            if self.known.get(&stat.ppid).is_some_and(|p| p.exe == exe)
                && args == args_of(stat.ppid)
            {
                continue;
            }
            out.push(Raw::Exec(RawExec {
                hdr: self.header(pid, &stat),
                retval: 0,
                argc: args.len() as u32,
                args,
                args_truncated: false,
                args_fault: false,
                filename: exe.into_bytes(),
                filename_truncated: false,
                execveat: false,
                resolved: false,
            }));
        }
        self.poll_sockets(out);
        self.primed = true;
    }

    fn poll_sockets(&mut self, out: &mut Vec<Raw>) {
        let mut all: Vec<(Socket, u16)> = Vec::new();
        for (file, ty) in [("tcp", 1u16), ("tcp6", 1), ("udp", 2), ("udp6", 2)] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
                all.extend(parse_net(&text).into_iter().map(|s| (s, ty)));
            }
        }
        let listening: HashSet<u16> = all
            .iter()
            .filter(|(s, ty)| *ty == 1 && s.state == TCP_LISTEN)
            .map(|(s, _)| s.local_port)
            .collect();
        let current: HashSet<u64> = all.iter().map(|(s, _)| s.inode).collect();
        let mut new: Vec<(Socket, u16)> = Vec::new();
        for (s, ty) in all {
            let outbound = !s.remote.is_unspecified()
                && s.inode != 0
                && !listening.contains(&s.local_port)
                && (ty == 2 || s.state == TCP_ESTABLISHED || s.state == TCP_SYN_SENT);
            if outbound && self.seen_sockets.insert(s.inode) && self.primed {
                new.push((s, ty));
            }
        }
        self.seen_sockets.retain(|i| current.contains(i));
        self.inode_pid.retain(|i, _| current.contains(i));
        if new.is_empty() {
            return;
        }
        if new
            .iter()
            .any(|(s, _)| !self.inode_pid.contains_key(&s.inode))
        {
            self.map_socket_inodes();
        }
        for (s, ty) in new {
            let Some(&pid) = self.inode_pid.get(&s.inode) else {
                continue; // gone already, or another namespace's
            };
            if pid == self.self_pid {
                continue;
            }
            let Some(stat) = read(&format!("/proc/{pid}/stat")).and_then(|b| parse_stat(&b)) else {
                continue;
            };
            let mut hdr = self.header(pid, &stat);
            // The connection was seen now, not when the process started.
            hdr.ktime_ns = u64::try_from(
                nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                    .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
                    .unwrap_or(0),
            )
            .unwrap_or(0);
            let unmap = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            out.push(Raw::Connect(RawConnect {
                hdr,
                retval: if s.state == TCP_SYN_SENT { -115 } else { 0 },
                remote: unmap(s.remote),
                port: s.remote_port,
                sock_type: ty,
                local: Some(unmap(s.local)),
                local_port: s.local_port,
                no_retval: false,
            }));
        }
    }

    /// Which process holds each socket: reads every process's fd links.
    fn map_socket_inodes(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(link) = std::fs::read_link(fd.path())
                    && let Some(ino) = link
                        .to_str()
                        .and_then(|l| l.strip_prefix("socket:["))
                        .and_then(|l| l.strip_suffix(']'))
                        .and_then(|l| l.parse::<u64>().ok())
                {
                    self.inode_pid.entry(ino).or_insert(pid);
                }
            }
        }
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_with_spaces_and_parentheses_parse() {
        let line = b"4242 (my (odd) name) S 4200 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, b"my (odd) name");
        assert_eq!((s.ppid, s.start), (4200, 123456));
        assert!(parse_stat(b"garbage").is_none());
    }

    #[test]
    fn ids_come_from_the_real_column() {
        let status = "Name:\tbash\nUid:\t1000\t0\t0\t0\nGid:\t33\t33\t33\t33\n";
        assert_eq!(parse_ids(status), (1000, 33));
    }

    #[test]
    fn net_tables_parse_in_both_families() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n   1: 0200000A:C958 077100CB:115C 01 00000000:00000000 00:00000000 00000000    33        0 5678 1 0000000000000000 20 4 30 10 -1\n";
        let s = parse_net(tcp);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s[0].local_port, s[0].state), (8080, TCP_LISTEN));
        assert_eq!(s[1].remote, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            (s[1].remote_port, s[1].local_port, s[1].inode),
            (4444, 51544, 5678)
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:A1B2 00000000000000000000000001000000:115C 02 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_net(tcp6);
        assert_eq!(s[0].remote, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((s[0].remote_port, s[0].state), (4444, TCP_SYN_SENT));
    }

    #[test]
    fn a_new_process_is_seen_with_its_argv_and_parent() {
        let mut sc = Scanner::new();
        let mut out = Vec::new();
        sc.poll(&mut out);
        assert!(out.is_empty(), "the first poll only learns");
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 2; :", "outlier-procfs-test", "two words"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        sc.poll(&mut out);
        let _ = child.kill();
        let _ = child.wait();
        let me = std::process::id();
        let ours: Vec<&RawExec> = out
            .iter()
            .filter_map(|r| match r {
                Raw::Exec(e) if e.hdr.tgid == child.id() => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(ours.len(), 1, "{out:?}");
        let e = ours[0];
        let args: Vec<&[u8]> = e.args.iter().map(Vec::as_slice).collect();
        assert_eq!(
            args,
            [
                &b"/bin/sh"[..],
                b"-c",
                b"sleep 2; :",
                b"outlier-procfs-test",
                b"two words"
            ]
        );
        assert_eq!(e.hdr.ppid, me);
        assert!(
            e.filename.ends_with(b"sh")
                || e.filename.ends_with(b"dash")
                || e.filename.ends_with(b"bash")
        );
    }
}
