//! Detection on real hosts (docs/detection.md): attack tests injected into
//! real captures of real hosts, scored by the scorer's own `Judge` exactly
//! as the pipeline scores them, and measured against the benign events of
//! the same captures.
//!
//! Each host's capture (`data/real/*.jsonl.gz`, recorded with
//! `scripts/record-benign`) is split by time: the first `split` of it is
//! replayed as the baseline (learned as the pipeline would learn it), the
//! rest is the validation part, scored with the attack tests injected at
//! random times into it. An attack test is a corpus record (a list of
//! command lines); its commands become the exec, connect and open events
//! they would cause, under a real process of the host of its context:
//!
//! - `web-rce`: a shell spawned by the web host's PHP workers (www-data);
//! - `ssh-session`: an interactive shell under sshd on any host;
//! - `cron`: a job of the host's cron daemon (root);
//! - `ci-job`: a step of the CI runner's job.
//!
//! The same streams are written by [`write_streams`] for
//! `scripts/eval-detection`, which replays them through Kafka, the scorer
//! and ClickHouse and reads the verdicts back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use outlier_common::json::{JsonEvent, to_event};
use outlier_proto::Event;
use serde::{Deserialize, Serialize};

use crate::shell;
use crate::sim::{Attack, Rng, attack_tactic};

/// One host's capture, in time order: one or more recordings of it.
#[derive(Debug, Clone)]
pub struct Capture {
    pub host: String,
    pub workload: String,
    pub events: Vec<JsonEvent>,
    /// The time span (first, last event) of each recording, in time order.
    /// Fractions of a capture ("its first 70%") are taken of each
    /// recording's own span, so a second recording days after the first
    /// adds to every part (training, fit window, validation) instead of
    /// the gap between them deciding which part gets what.
    pub recordings: Vec<(u64, u64)>,
}

impl Capture {
    /// One recording's capture: its span is that of its events.
    pub fn new(host: String, workload: String, mut events: Vec<JsonEvent>) -> Capture {
        events.sort_by_key(ts);
        let span = (
            events.first().map(ts).unwrap_or(0),
            events.last().map(ts).unwrap_or(0),
        );
        Capture {
            host,
            workload,
            events,
            recordings: vec![span],
        }
    }

    /// Adds another recording of the same host.
    pub fn merge(&mut self, other: Capture) {
        self.events.extend(other.events);
        self.events.sort_by_key(ts);
        self.recordings.extend(other.recordings);
        self.recordings.sort_unstable();
    }

    /// The first `fraction` of each recording's time span; each recording
    /// then spans the events it kept.
    pub fn until(&self, fraction: f64) -> Capture {
        let cuts = self.cuts(fraction);
        let events: Vec<JsonEvent> = self
            .events
            .iter()
            .filter(|e| self.before(&cuts, ts(e)))
            .cloned()
            .collect();
        let mut recordings: Vec<(u64, u64)> =
            self.recordings.iter().map(|&(t0, _)| (t0, t0)).collect();
        let mut seen = vec![false; recordings.len()];
        for e in &events {
            let i = self.recording_of(ts(e));
            if !seen[i] {
                recordings[i].0 = ts(e);
                seen[i] = true;
            }
            recordings[i].1 = ts(e);
        }
        Capture {
            host: self.host.clone(),
            workload: self.workload.clone(),
            events,
            recordings,
        }
    }

    /// The recording that holds time `t`: the last one starting at or
    /// before it (the first one for times before every recording).
    fn recording_of(&self, t: u64) -> usize {
        self.recordings
            .partition_point(|&(t0, _)| t0 <= t)
            .saturating_sub(1)
    }

    /// Where `fraction` of each recording's span ends.
    fn cuts(&self, fraction: f64) -> Vec<u64> {
        self.recordings
            .iter()
            .map(|&(t0, t1)| t0 + ((t1 - t0) as f64 * fraction) as u64)
            .collect()
    }

    /// Whether `t` lies before its recording's cut.
    fn before(&self, cuts: &[u64], t: u64) -> bool {
        t < cuts[self.recording_of(t)]
    }

    /// The validation windows (cut, end) of each recording at `fraction`.
    fn windows(&self, fraction: f64) -> Vec<(u64, u64)> {
        self.recordings
            .iter()
            .zip(self.cuts(fraction))
            .map(|(&(_, t1), cut)| (cut, t1))
            .collect()
    }
}

fn ts(e: &JsonEvent) -> u64 {
    e.ts_ns.unwrap_or(0)
}

/// Reads every `*.jsonl.gz` and `*.jsonl` capture under `dir`; each file is
/// one recording of each host in it, and the recordings of one host make
/// its capture (split by fractions of each recording, see [`Capture`]).
pub fn load_captures(dir: &Path) -> anyhow::Result<Vec<Capture>> {
    let mut by_host: BTreeMap<String, Capture> = BTreeMap::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".jsonl.gz") || n.ends_with(".jsonl")
        })
        .collect();
    paths.sort();
    for p in paths {
        let f = std::fs::File::open(&p)?;
        let r: Box<dyn BufRead> = if p.to_string_lossy().ends_with(".gz") {
            Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(f)))
        } else {
            Box::new(std::io::BufReader::new(f))
        };
        let mut in_file: BTreeMap<String, (String, Vec<JsonEvent>)> = BTreeMap::new();
        for line in BufRead::lines(r) {
            let line = line?;
            let Ok(e) = serde_json::from_str::<JsonEvent>(&line) else {
                continue;
            };
            let (Some(host), Some(workload)) = (e.host.clone(), e.workload.clone()) else {
                continue;
            };
            in_file
                .entry(host)
                .or_insert_with(|| (workload, Vec::new()))
                .1
                .push(e);
        }
        // Each file is one recording of each host in it.
        for (host, (workload, events)) in in_file {
            let rec = Capture::new(host.clone(), workload, events);
            match by_host.get_mut(&host) {
                Some(c) => c.merge(rec),
                None => {
                    by_host.insert(host, rec);
                }
            }
        }
    }
    let out: Vec<Capture> = by_host.into_values().collect();
    anyhow::ensure!(!out.is_empty(), "no capture under {}", dir.display());
    Ok(out)
}

/// Reads attack tests (the corpus format of `data/attacks_train.jsonl`).
pub fn load_attacks(path: &Path) -> anyhow::Result<Vec<AttackTest>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<AttackTest>(l).ok())
        .filter(|a| !a.attack.commands.is_empty())
        .collect())
}

/// An attack record with the context it belongs in (optional).
#[derive(Debug, Clone, Deserialize)]
pub struct AttackTest {
    #[serde(flatten)]
    pub attack: Attack,
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub source: String,
}

/// Ground truth of an evaluation event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub malicious: bool,
    /// Index of the attack test (malicious events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<usize>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tactic: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub technique: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context: String,
}

/// One event of an evaluation stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalEvent {
    #[serde(flatten)]
    pub event: JsonEvent,
    pub truth: Truth,
    /// In the baseline part (learned, not measured).
    #[serde(default)]
    pub baseline: bool,
    /// Which recording of its host it belongs to (0 = the first): the
    /// decision's budgets hold on each (`scripts/fit_decision.py`).
    #[serde(default)]
    pub recording: usize,
}

/// The evaluation streams: the baseline part and the validation part with
/// the attack tests injected, both in time order.
#[derive(Debug, Clone)]
pub struct Streams {
    pub baseline: Vec<EvalEvent>,
    pub validation: Vec<EvalEvent>,
    /// The attack tests (index = `Truth::test`).
    pub tests: Vec<AttackTest>,
    /// Validation hours per host.
    pub host_hours: BTreeMap<String, f64>,
}

/// Where an attack test runs on a host: the process it starts under.
#[derive(Debug, Clone)]
struct Anchor {
    host: String,
    workload: String,
    parent: String,
    ppid: u32,
    uid: u32,
    cwd: String,
    /// The parent's own pid and name's parent (where known): a job runner
    /// whose shell runs the commands itself.
    grandparent: (u32, String),
}

/// Builds the streams: splits each capture at `split` of its time span,
/// injects each attack test once at a random time of the validation part
/// of a host where its context exists. Deterministic from `seed`.
pub fn build_streams(
    captures: &[Capture],
    tests: Vec<AttackTest>,
    split: f64,
    org: &str,
    seed: u64,
) -> Streams {
    let mut rng = Rng::new(seed);
    let mut baseline = Vec::new();
    let mut validation = Vec::new();
    let mut host_hours = BTreeMap::new();
    let mut windows: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut anchors: HashMap<&'static str, Vec<Anchor>> = HashMap::new();
    let mut exes: HashMap<String, shell::Exes> = HashMap::new();
    for c in captures {
        let w = c.windows(split);
        let ns: u64 = w.iter().map(|(a, b)| b - a).sum();
        host_hours.insert(c.host.clone(), ns as f64 / 3.6e12);
        windows.insert(c.host.clone(), w);
        let cuts = c.cuts(split);
        for e in &c.events {
            let mut e = e.clone();
            e.org = Some(org.to_string());
            let base = c.before(&cuts, ts(&e));
            let recording = c.recording_of(ts(&e));
            let ev = EvalEvent {
                event: e,
                truth: Truth::default(),
                baseline: base,
                recording,
            };
            if base {
                baseline.push(ev);
            } else {
                validation.push(ev);
            }
        }
        for (ctx, a) in find_anchors(c) {
            anchors.entry(ctx).or_default().push(a);
        }
        exes.insert(c.host.clone(), host_exes(c, &cuts));
    }
    let mut next_id = 0u64;
    for (i, t) in tests.iter().enumerate() {
        let tactic = attack_tactic(&t.attack);
        let ctx = if !t.context.is_empty() {
            t.context.clone()
        } else {
            // As the simulator places corpus attacks.
            match tactic {
                "persistence" if rng.chance(0.5) => "cron",
                "execution" | "command-and-control" if rng.chance(0.5) => "web-rce",
                _ => ["web-rce", "ssh-session", "cron", "ci-job"][rng.below(4)],
            }
            .to_string()
        };
        let key: &'static str = match ctx.as_str() {
            "web-rce" => "web-rce",
            "cron" => "cron",
            "ci-job" => "ci-job",
            _ => "ssh-session",
        };
        let Some(candidates) = anchors
            .get(key)
            .filter(|a| !a.is_empty())
            .or_else(|| anchors.get("ssh-session"))
        else {
            continue;
        };
        let anchor = candidates[rng.below(candidates.len())].clone();
        let (at, recording) = random_time(&windows[&anchor.host], &mut rng);
        let truth = Truth {
            malicious: true,
            test: Some(i),
            tactic: tactic.to_string(),
            technique: t.attack.technique.clone(),
            context: key.to_string(),
        };
        let host_exes = exes.get(&anchor.host);
        for e in attack_events(&t.attack, key, &anchor, host_exes, at, org, &mut rng) {
            next_id += 1;
            let mut e = e;
            e.event_id = Some(format!("atk-{i}-{next_id}"));
            validation.push(EvalEvent {
                event: e,
                truth: truth.clone(),
                baseline: false,
                recording,
            });
        }
    }
    validation.sort_by_key(|e| e.event.ts_ns.unwrap_or(0));
    baseline.sort_by_key(|e| e.event.ts_ns.unwrap_or(0));
    Streams {
        baseline,
        validation,
        tests,
        host_hours,
    }
}

/// A random time of the validation windows, uniform over their length,
/// and the index of its window.
fn random_time(windows: &[(u64, u64)], rng: &mut Rng) -> (u64, usize) {
    let total: u64 = windows.iter().map(|(a, b)| b - a).sum();
    let mut r = rng.next_u64() % total.max(1);
    for (i, &(a, b)) in windows.iter().enumerate() {
        if r < b - a {
            return (a + r, i);
        }
        r -= b - a;
    }
    (
        windows.last().map(|w| w.0).unwrap_or(0),
        windows.len().saturating_sub(1),
    )
}

/// Real processes of a capture that attacks can start under.
/// Each program's executable as the host's baseline reports it: its most
/// common `exe` for the name (`sh` is /usr/bin/dash, `awk` /usr/bin/mawk,
/// `python3` a pyenv build on the build box), so an injected exec names
/// the file the host's kernel would.
fn host_exes(c: &Capture, cuts: &[u64]) -> shell::Exes {
    let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
    for e in &c.events {
        if e.kind.as_deref() != Some("exec") || !c.before(cuts, ts(e)) {
            continue;
        }
        if let (Some(comm), Some(exe)) = (e.comm.as_deref(), e.exe.as_deref())
            && exe.starts_with('/')
        {
            *counts.entry((comm, exe)).or_default() += 1;
        }
    }
    let mut best: HashMap<&str, (usize, &str)> = HashMap::new();
    for ((comm, exe), n) in counts {
        let b = best.entry(comm).or_insert((0, exe));
        // Ties go to the lexically first path, so the choice is stable.
        if n > b.0 || (n == b.0 && exe < b.1) {
            *b = (n, exe);
        }
    }
    best.into_iter()
        .map(|(comm, (_, exe))| (comm.to_string(), exe.to_string()))
        .collect()
}

fn find_anchors(c: &Capture) -> Vec<(&'static str, Anchor)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    // Each process's parent, from its events.
    let mut parents: HashMap<u32, (u32, String)> = HashMap::new();
    for e in &c.events {
        if let (Some(p), Some(pp), Some(pc)) = (e.pid, e.ppid, e.parent_comm.as_ref()) {
            parents.entry(p).or_insert_with(|| (pp, pc.clone()));
        }
    }
    let anchor = |e: &JsonEvent, parent: &str, uid: u32, cwd: &str| Anchor {
        host: c.host.clone(),
        workload: c.workload.clone(),
        parent: parent.to_string(),
        ppid: e.pid.unwrap_or(0),
        uid,
        cwd: cwd.to_string(),
        grandparent: parents
            .get(&e.ppid.unwrap_or(0))
            .cloned()
            .unwrap_or((1, "systemd".into())),
    };
    for e in &c.events {
        if e.kind.as_deref() != Some("exec") {
            continue;
        }
        let comm = e.comm.as_deref().unwrap_or("");
        let parent = e.parent_comm.as_deref().unwrap_or("");
        let cwd = e.cwd.as_deref().unwrap_or("/");
        // A web worker that runs programs: its pid is the shell's parent.
        let ctx: Option<(&'static str, Anchor)> = if parent.starts_with("php-fpm") {
            Some((
                "web-rce",
                Anchor {
                    ppid: e.ppid.unwrap_or(0),
                    ..anchor(e, parent, e.uid.unwrap_or(33), cwd)
                },
            ))
        } else if parent == "cron" {
            Some((
                "cron",
                Anchor {
                    ppid: e.ppid.unwrap_or(0),
                    ..anchor(e, "cron", 0, "/")
                },
            ))
        } else if c.workload == "ci" && comm == "git" && parent == "ci-runner" {
            // The job's shell (the runner's subshell) runs the step.
            Some((
                "ci-job",
                Anchor {
                    ppid: e.ppid.unwrap_or(0),
                    ..anchor(e, parent, e.uid.unwrap_or(0), cwd)
                },
            ))
        } else {
            None
        };
        if let Some((k, a)) = ctx
            && seen.insert((k, a.ppid, a.parent.clone()))
        {
            out.push((k, a));
        }
    }
    // Any host can be logged into over ssh: a new session under sshd.
    {
        let home = if c.workload == "dev" {
            "/home/dev"
        } else {
            "/root"
        };
        out.push((
            "ssh-session",
            Anchor {
                host: c.host.clone(),
                workload: c.workload.clone(),
                parent: "sshd".into(),
                ppid: 1_900_000 + (xxhash_rust::xxh3::xxh3_64(c.host.as_bytes()) % 90_000) as u32,
                uid: 0,
                cwd: home.into(),
                grandparent: (1, "systemd".into()),
            },
        ));
    }
    // The CI runner's job steps run under its shell.
    if c.workload == "ci" && !out.iter().any(|(k, _)| *k == "ci-job") {
        for e in &c.events {
            if e.parent_comm.as_deref() == Some("ci-runner") {
                out.push((
                    "ci-job",
                    Anchor {
                        host: c.host.clone(),
                        workload: c.workload.clone(),
                        parent: "ci-runner".into(),
                        ppid: e.ppid.unwrap_or(0),
                        uid: e.uid.unwrap_or(0),
                        cwd: e.cwd.clone().unwrap_or_else(|| "/tmp".into()),
                        grandparent: parents
                            .get(&e.ppid.unwrap_or(0))
                            .cloned()
                            .unwrap_or((1, "systemd".into())),
                    },
                ));
                break;
            }
        }
    }
    out
}

/// The events an attack test's commands cause, starting at `at`.
fn attack_events(
    a: &Attack,
    ctx: &str,
    anchor: &Anchor,
    exes: Option<&shell::Exes>,
    at: u64,
    org: &str,
    rng: &mut Rng,
) -> Vec<JsonEvent> {
    let mut out = Vec::new();
    let mut t = at;
    let uid = match ctx {
        "ssh-session" if a.elevated => 0,
        "ssh-session" => 1000,
        _ => anchor.uid,
    };
    let home = match (ctx, uid) {
        ("ssh-session", 0) | ("cron", _) => "/root".to_string(),
        // A user's session: the host's user home.
        ("ssh-session", _) if anchor.cwd.starts_with("/home/") => anchor.cwd.clone(),
        ("ssh-session", _) => "/home/admin".to_string(),
        ("web-rce", _) => "/var/www".to_string(),
        _ => anchor.cwd.clone(),
    };
    let cwd = if ctx == "ssh-session" {
        home.clone()
    } else {
        anchor.cwd.clone()
    };
    // Stamps an event with where and when it happened.
    let push = |e: JsonEvent, t: &mut u64, rng: &mut Rng, out: &mut Vec<JsonEvent>| {
        *t += if e.kind.as_deref() == Some("exec") {
            rng.below(50) as u64 * 1_000_000
        } else {
            1_000_000
        };
        out.push(JsonEvent {
            org: Some(org.to_string()),
            workload: Some(anchor.workload.clone()),
            host: Some(anchor.host.clone()),
            ts_ns: Some(*t),
            ..e
        });
    };
    let new_pid = |rng: &mut Rng| 200_000 + rng.below(2_000_000) as u32;
    // The exec of the shell a test's commands run in, under the anchor.
    let shell_exec = |pid: u32, comm: &str, parent: &str, argv: Vec<String>| JsonEvent {
        kind: Some("exec".into()),
        pid: Some(pid),
        ppid: Some(anchor.ppid),
        uid: Some(uid),
        gid: Some(uid),
        comm: Some(comm.into()),
        parent_comm: Some(parent.into()),
        exe: Some(shell::exe_of(exes, comm)),
        argv: Some(argv),
        cwd: Some(cwd.clone()),
        ..JsonEvent::default()
    };
    // An ssh session's login shell runs every command; a job runner's own
    // shell runs the job's; a web exploit and cron start `sh -c` per command.
    let login = (ctx == "ssh-session").then(|| {
        let p = new_pid(rng);
        let e = shell_exec(p, "bash", "sshd", vec!["-bash".into()]);
        push(e, &mut t, rng, &mut out);
        p
    });
    // A login shell and a job runner's shell keep the variables one line
    // sets for the next; each `sh -c` starts with none.
    let mut session = shell::Vars::default();
    for cmd in a.commands.iter().take(12) {
        t += 1_000_000_000 + rng.below(4_000) as u64 * 1_000_000;
        let shell = match (ctx, login) {
            (_, Some(p)) => shell::Shell {
                pid: p,
                comm: "bash",
                ppid: anchor.ppid,
                parent_comm: "sshd",
                uid,
                cwd: &cwd,
                home: &home,
                exes,
            },
            ("ci-job", _) => shell::Shell {
                pid: anchor.ppid,
                comm: &anchor.parent,
                ppid: anchor.grandparent.0,
                parent_comm: &anchor.grandparent.1,
                uid,
                cwd: &cwd,
                home: &home,
                exes,
            },
            _ => {
                let p = new_pid(rng);
                let argv = vec!["sh".into(), "-c".into(), cmd.clone()];
                let e = shell_exec(p, "sh", &anchor.parent, argv);
                push(e, &mut t, rng, &mut out);
                shell::Shell {
                    pid: p,
                    comm: "sh",
                    ppid: anchor.ppid,
                    parent_comm: &anchor.parent,
                    uid,
                    cwd: &cwd,
                    home: &home,
                    exes,
                }
            }
        };
        let shell = shell.clone();
        let mut fresh = shell::Vars::default();
        let vars = if login.is_some() || ctx == "ci-job" {
            &mut session
        } else {
            &mut fresh
        };
        let evs = shell::events_in(cmd, &shell, vars, || new_pid(rng));
        for e in evs {
            push(e, &mut t, rng, &mut out);
        }
    }
    out
}

/// Writes the streams as labelled JSON Lines for `scripts/eval-detection`:
/// `baseline.jsonl`, `validation.jsonl` (events carry `truth`, which replay
/// ignores) and `tests.json`.
pub fn write_streams(s: &Streams, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, evs) in [("baseline", &s.baseline), ("validation", &s.validation)] {
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{name}.jsonl")))?);
        for e in evs.iter() {
            serde_json::to_writer(&mut w, e)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let meta = serde_json::json!({
        "tests": s.tests.iter().map(|t| serde_json::json!({
            "id": t.attack.id, "technique": t.attack.technique,
            "tactic": attack_tactic(&t.attack), "source": t.source,
        })).collect::<Vec<_>>(),
        "host_hours": s.host_hours,
    });
    std::fs::write(dir.join("tests.json"), serde_json::to_string_pretty(&meta)?)?;
    Ok(())
}

/// Event ids for stream events that have none (captures always have one).
pub fn event_of(e: &EvalEvent, i: usize) -> Option<Event> {
    to_event(e.event.clone(), 0, || format!("eval-{i}")).ok()
}

/// What one validation event got.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub truth: Truth,
    pub host: String,
    /// Which recording of the host (0 = the first).
    pub recording: usize,
    /// What the event was (for reading the false positives).
    pub what: String,
    pub signals: outlier_scorer::score::Signals,
    /// The verdict of the scorer as configured (0 ok, 1 warn, 2 alert).
    pub verdict: u8,
    /// The previous design's verdict (the more severe of the two judges').
    pub previous: u8,
    /// The tactic it was named (empty: benign).
    pub tactic: String,
    pub explanation: String,
    /// The first seed's design: min(1, 2 × cosine distance) to the nearest
    /// of every earlier event of the workload, its own feature hashing.
    pub seed_score: f32,
}

/// Scores the streams with `judge` (the scorer's own per-event path) and
/// the first seed's design side by side: the baseline part is learned, the
/// validation part is scored (and learned, as in production).
///
/// `attacks_in_own`: the attack tests' events count towards their
/// workload's own operating point (`scoring.decision.own_budget`), so
/// tests injected close together raise the threshold for each other;
/// otherwise each test is judged as if it were the only attack (the
/// operating point in force comes from the workload's previous period, so
/// a test's own events never move it).
pub fn score_streams(
    s: &Streams,
    judge: &mut outlier_scorer::judge::Judge,
    previous: &mut outlier_scorer::judge::Judge,
    attacks_in_own: bool,
) -> Vec<Outcome> {
    let mut seed = SeedKnn::default();
    for (i, e) in s.baseline.iter().enumerate() {
        if let Some(ev) = event_of(e, i) {
            seed.score_and_add(&ev);
            previous.score(ev.clone());
            judge.score(ev);
        }
    }
    let mut out = Vec::with_capacity(s.validation.len());
    for (i, e) in s.validation.iter().enumerate() {
        let Some(ev) = event_of(e, s.baseline.len() + i) else {
            continue;
        };
        let seed_score = seed.score_and_add(&ev);
        let what = describe(&ev);
        let host = ev.host.clone();
        let prev = (previous.score(ev.clone()).verdict - 1).clamp(0, 2) as u8;
        let (scored, signals) = judge.score_as(ev, attacks_in_own || e.truth.test.is_none());
        out.push(Outcome {
            truth: e.truth.clone(),
            host,
            recording: e.recording,
            what,
            signals,
            verdict: (scored.verdict - 1).clamp(0, 2) as u8,
            previous: prev,
            tactic: scored.tactic.clone(),
            explanation: scored.explanation,
            seed_score,
        });
    }
    out
}

fn describe(e: &Event) -> String {
    use outlier_proto::event::Detail;
    let body = match &e.detail {
        Some(Detail::Exec(x)) => x.argv.join(" "),
        Some(Detail::Connect(c)) => format!("{}:{}", c.remote_ip, c.remote_port),
        Some(Detail::Open(o)) => format!("{} flags={:o}", o.path, o.flags),
        None => String::new(),
    };
    let mut s = format!("{} {}<{} {}", e.kind_name(), e.comm, e.parent_comm, body);
    if s.len() > 160 {
        let mut cut = 160;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The first seed's design, as its article gives it: tokens (process,
/// parent, event type, ports, the command line split on spaces) hashed
/// with a per-position seed into 128 signed dimensions, L2-normalised;
/// the anomaly score is min(1, 2 × cosine distance) to the nearest of all
/// earlier events of the workload (1 for an empty workload); every event is
/// added. Exact over the last [`SEED_WINDOW`] distinct vectors of each
/// workload: the seed's vectors keep every random file name apart, so a
/// build box's or a database's file writes are all distinct, and a
/// quadratic scan over hundreds of thousands would take hours (its own
/// LanceDB table forgets after seven days; this forgets sooner, which can
/// only raise its scores).
#[derive(Default)]
pub struct SeedKnn {
    workloads: HashMap<String, SeedRows>,
}

/// A workload's distinct vectors in the seed's design: their bits (to skip
/// duplicates) and the vectors, oldest first.
type SeedRows = (HashSet<[u32; 128]>, std::collections::VecDeque<[f32; 128]>);

/// Distinct vectors the seed's design is compared with, per workload.
pub const SEED_WINDOW: usize = 5_000;

impl SeedKnn {
    pub fn embed(e: &Event) -> [f32; 128] {
        use outlier_proto::event::Detail;
        let (lport, rport, cmdline) = match &e.detail {
            Some(Detail::Exec(x)) => (
                "undefined".to_string(),
                "undefined".to_string(),
                x.argv.join(" "),
            ),
            Some(Detail::Connect(c)) => (
                c.local_port.to_string(),
                c.remote_port.to_string(),
                c.remote_ip.clone(),
            ),
            Some(Detail::Open(o)) => ("undefined".into(), "undefined".into(), o.path.clone()),
            None => ("undefined".into(), "undefined".into(), String::new()),
        };
        let mut tokens = vec![
            e.comm.clone(),
            e.parent_comm.clone(),
            e.kind_name().to_string(),
            lport,
            rport,
        ];
        tokens.extend(cmdline.split_whitespace().map(str::to_string));
        let mut v = [0f32; 128];
        for (i, t) in tokens.iter().enumerate() {
            let t = t.trim().to_lowercase();
            if t.is_empty() {
                continue;
            }
            let s = (i as u64) * 31;
            let idx = (xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), s) % 128) as usize;
            let sign = if xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), s + 1) & 1 == 1 {
                1.0
            } else {
                -1.0
            };
            v[idx] += sign;
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// Scores `e` against its workload, then adds it.
    pub fn score_and_add(&mut self, e: &Event) -> f32 {
        let v = Self::embed(e);
        let (seen, rows) = self
            .workloads
            .entry(format!("{}\0{}", e.org, e.workload))
            .or_default();
        let best = rows
            .iter()
            .map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>())
            .fold(f32::NEG_INFINITY, f32::max);
        let score = if rows.is_empty() {
            1.0
        } else {
            (2.0 * (1.0 - best)).clamp(0.0, 1.0)
        };
        if seen.insert(v.map(f32::to_bits)) {
            rows.push_back(v);
            if rows.len() > SEED_WINDOW
                && let Some(old) = rows.pop_front()
            {
                seen.remove(&old.map(f32::to_bits));
            }
        }
        score
    }
}

/// Rates of one decision rule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    pub rule: String,
    /// Attack tests with at least one event flagged.
    pub tests_flagged: f64,
    /// Benign events flagged.
    pub benign_flagged: f64,
    /// Benign flags per host-hour.
    pub per_host_hour: f64,
}

/// Rates of a rule given as "flagged or not" per event.
pub fn rates(rule: &str, out: &[Outcome], hours: f64, flagged: impl Fn(&Outcome) -> bool) -> Rates {
    let mut tests: HashMap<usize, bool> = HashMap::new();
    let (mut benign, mut fp) = (0usize, 0usize);
    for o in out {
        let f = flagged(o);
        match o.truth.test {
            Some(t) => *tests.entry(t).or_default() |= f,
            None => {
                benign += 1;
                fp += usize::from(f);
            }
        }
    }
    Rates {
        rule: rule.to_string(),
        tests_flagged: tests.values().filter(|f| **f).count() as f64 / tests.len().max(1) as f64,
        benign_flagged: fp as f64 / benign.max(1) as f64,
        per_host_hour: fp as f64 / hours.max(1e-9),
    }
}

/// The smallest threshold on `score` whose benign flag rate is at most
/// `budget`, and the rates there ("at equal false-positive rates").
pub fn at_budget(
    rule: &str,
    out: &[Outcome],
    hours: f64,
    budget: f64,
    score: impl Fn(&Outcome) -> f32,
) -> (f32, Rates) {
    let mut benign: Vec<f32> = out
        .iter()
        .filter(|o| o.truth.test.is_none())
        .map(&score)
        .collect();
    benign.sort_by(|a, b| b.total_cmp(a));
    let allowed = (budget * benign.len() as f64).floor() as usize;
    // Flag strictly above the (allowed+1)-th highest benign score.
    let thr = benign.get(allowed).map(|s| next_up(*s)).unwrap_or(f32::MIN);
    let label =
        if benign.first().is_some_and(|top| thr > *top) && benign.get(allowed) == benign.first() {
            format!(
                "{rule}: none within {:.2}% (ties at its top score)",
                100.0 * budget
            )
        } else {
            format!("{rule} ≥ {thr:.3} ({:.2}% budget)", 100.0 * budget)
        };
    let r = rates(&label, out, hours, |o| score(o) >= thr);
    (thr, r)
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    f32::from_bits(if x >= 0.0 {
        x.to_bits() + 1
    } else {
        x.to_bits() - 1
    })
}

/// Top-1 tactic accuracy over flagged attack tests: the tactic named on the
/// test's most malicious-looking flagged event against its label.
pub fn tactic_accuracy(out: &[Outcome], flagged: impl Fn(&Outcome) -> bool) -> (usize, usize) {
    let mut best: HashMap<usize, (f32, &Outcome)> = HashMap::new();
    for o in out.iter().filter(|o| flagged(o)) {
        if let Some(t) = o.truth.test {
            let e = best.entry(t).or_insert((f32::MIN, o));
            if o.signals.p_malicious > e.0 {
                *e = (o.signals.p_malicious, o);
            }
        }
    }
    let right = best
        .values()
        .filter(|(_, o)| o.tactic == o.truth.tactic)
        .count();
    (right, best.len())
}

/// Writes every validation outcome as TSV (for reading what was flagged).
pub fn write_outcomes(out: &[Outcome], path: &Path) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        "test\ttactic\thost\trecording\tverdict\tprevious\tp_decision\toffset\tanomaly\tdistance\tcount\tbaseline_events\tp_malicious\thigh_precision\tnew_lineage\tseed\tnamed\tshift\twhat"
    )?;
    for o in out {
        let s = &o.signals;
        writeln!(
            w,
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.6}\t{:.3}\t{:.4}\t{:.4}\t{}\t{}\t{:.4}\t{}\t{}\t{:.4}\t{}\t{:.2}\t{}",
            o.truth.test.map(|t| t.to_string()).unwrap_or_default(),
            o.truth.tactic,
            o.host,
            o.recording,
            o.verdict,
            o.previous,
            s.p_decision,
            s.workload_offset,
            s.anomaly,
            s.nearest_distance,
            s.nearest_count,
            s.baseline_events,
            s.p_malicious,
            s.high_precision.unwrap_or(""),
            u8::from(s.new_lineage),
            o.seed_score,
            o.tactic,
            s.own_shift,
            o.what.replace(['\t', '\n'], " ")
        )?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    fn recording(start: u64, minutes: u64) -> Capture {
        let events = (0..=minutes)
            .map(|m| JsonEvent {
                ts_ns: Some(start + m * MIN),
                host: Some("h".into()),
                workload: Some("w".into()),
                kind: Some("exec".into()),
                comm: Some("true".into()),
                ..Default::default()
            })
            .collect();
        Capture::new("h".into(), "w".into(), events)
    }

    #[test]
    fn fractions_are_taken_of_each_recording() {
        // Two recordings of 100 minutes, six days apart: a fraction of the
        // whole span would cut in the gap and give all of the first to one
        // part and all of the second to the other.
        let mut c = recording(0, 100);
        c.merge(recording(6 * 24 * 60 * MIN, 100));
        let first_half = c.until(0.5);
        assert_eq!(first_half.events.len(), 2 * 50);
        assert_eq!(
            first_half.recordings,
            vec![(0, 49 * MIN), (8640 * MIN, 8689 * MIN)]
        );

        let s = build_streams(&[c], Vec::new(), 0.7, "o", 1);
        let later = |evs: &[EvalEvent]| evs.iter().filter(|e| ts(&e.event) >= 8640 * MIN).count();
        assert_eq!((s.baseline.len(), s.validation.len()), (140, 62));
        assert_eq!((later(&s.baseline), later(&s.validation)), (70, 31));
        let second = |evs: &[EvalEvent]| evs.iter().filter(|e| e.recording == 1).count();
        assert_eq!((second(&s.baseline), second(&s.validation)), (70, 31));
        // Validation hours count both windows, not the gap.
        assert!((s.host_hours["h"] - 2.0 * 30.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn injected_times_fall_inside_the_windows() {
        let w = [(100, 200), (1_000, 1_050)];
        let mut rng = Rng::new(3);
        let mut in_second = 0;
        for _ in 0..1_000 {
            let (t, i) = random_time(&w, &mut rng);
            assert!((w[i].0..w[i].1).contains(&t), "{t} in window {i}");
            in_second += usize::from(t >= 1_000);
        }
        // Uniform over their length: a third of the draws in the second.
        assert!((250..420).contains(&in_second), "{in_second}");
    }
}
