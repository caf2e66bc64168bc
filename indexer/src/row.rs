//! The `security_events` row and its conversion from a scored event.

use clickhouse::Row;
use outlier_proto::{Contribution, Protocol, ScoredEvent, event::Detail};
use serde::{Deserialize, Serialize};

/// One row of `security_events`. Field order is the column order of inserts.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: String,
    pub org: String,
    pub workload: String,
    pub host: String,
    pub kind: String,
    /// Event time, seconds (DateTime).
    pub ts: u32,
    /// Event time, nanoseconds.
    pub ts_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub parent_comm: String,
    pub exe: String,
    pub cgroup: String,
    pub source: String,
    pub argv: Vec<String>,
    pub argv_truncated: u8,
    pub cwd: String,
    pub remote_ip: String,
    pub remote_port: u16,
    pub local_port: u16,
    pub protocol: String,
    pub path: String,
    pub open_flags: u32,
    pub anomaly_score: f32,
    pub nearest_distance: f32,
    pub threat_category: String,
    pub tactic: String,
    pub technique: String,
    pub confidence: f32,
    pub verdict: String,
    pub explanation: String,
    pub scored_at_ns: u64,
    pub scorer_version: String,
    pub behaviour_key: u64,
    pub contrib_features: Vec<String>,
    pub contrib_values: Vec<f64>,
    pub contrib_shap: Vec<f64>,
    pub contrib_sentences: Vec<String>,
    pub suppressed_by: String,
    pub signature_id: String,
    /// Behaviours the workload's baseline had when the event was scored.
    pub baseline_size: u64,
    /// 1 when the event's behaviour was learned into the baseline.
    pub learned: u8,
}

impl EventRow {
    pub fn from_scored(s: &ScoredEvent) -> Self {
        let e = s.event.clone().unwrap_or_default();
        let mut row = EventRow {
            kind: e.kind_name().to_string(),
            ts: u32::try_from(e.ts_ns / 1_000_000_000).unwrap_or(u32::MAX),
            ts_ns: e.ts_ns,
            event_id: e.event_id,
            org: e.org,
            workload: e.workload,
            host: e.host,
            pid: e.pid,
            ppid: e.ppid,
            uid: e.uid,
            gid: e.gid,
            comm: e.comm,
            parent_comm: e.parent_comm,
            exe: e.exe,
            cgroup: e.cgroup,
            source: e.source,
            anomaly_score: s.anomaly_score,
            nearest_distance: s.nearest_distance,
            threat_category: s.threat_category.clone(),
            tactic: s.tactic.clone(),
            technique: s.technique.clone(),
            confidence: s.confidence,
            verdict: s.verdict().label().to_string(),
            explanation: s.explanation.clone(),
            scored_at_ns: s.scored_at_ns,
            scorer_version: s.scorer_version.clone(),
            behaviour_key: s.behaviour_key,
            contrib_features: s.contributions.iter().map(|c| c.feature.clone()).collect(),
            contrib_values: s.contributions.iter().map(|c| c.value).collect(),
            contrib_shap: s.contributions.iter().map(|c| c.shap).collect(),
            contrib_sentences: s.contributions.iter().map(|c| c.sentence.clone()).collect(),
            suppressed_by: s.suppressed_by.clone(),
            signature_id: s.signature_id.clone(),
            baseline_size: s.baseline_size,
            learned: u8::from(s.learned),
            ..EventRow::default()
        };
        match e.detail {
            Some(Detail::Exec(x)) => {
                row.argv = x.argv;
                row.argv_truncated = u8::from(x.argv_truncated);
                row.cwd = x.cwd;
            }
            Some(Detail::Connect(c)) => {
                row.remote_ip = c.remote_ip;
                row.remote_port = u16::try_from(c.remote_port).unwrap_or(0);
                row.local_port = u16::try_from(c.local_port).unwrap_or(0);
                row.protocol = if c.protocol == Protocol::Udp as i32 {
                    "udp"
                } else {
                    "tcp"
                }
                .to_string();
            }
            Some(Detail::Open(o)) => {
                row.path = o.path;
                row.open_flags = o.flags;
            }
            None => {}
        }
        row
    }
}

impl EventRow {
    /// The scored event a row was made from (the inverse of
    /// [`EventRow::from_scored`]).
    pub fn to_scored(&self) -> ScoredEvent {
        use outlier_proto::{AddressFamily, Connect, Event, EventKind, Exec, Open, Verdict};
        let detail = match EventKind::from_label(&self.kind).unwrap_or_default() {
            EventKind::Exec => Some(Detail::Exec(Exec {
                argv: self.argv.clone(),
                argv_truncated: self.argv_truncated != 0,
                argc: self.argv.len() as u32,
                cwd: self.cwd.clone(),
                retval: None,
            })),
            EventKind::Connect => Some(Detail::Connect(Connect {
                family: if self.remote_ip.contains(':') {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                } as i32,
                remote_ip: self.remote_ip.clone(),
                remote_port: u32::from(self.remote_port),
                local_ip: String::new(),
                local_port: u32::from(self.local_port),
                protocol: if self.protocol == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                } as i32,
                retval: None,
            })),
            EventKind::Open => Some(Detail::Open(Open {
                path: self.path.clone(),
                path_truncated: false,
                flags: self.open_flags,
                retval: None,
            })),
            EventKind::Unspecified => None,
        };
        let verdict = Verdict::from_label(&self.verdict).unwrap_or_default();
        ScoredEvent {
            event: Some(Event {
                event_id: self.event_id.clone(),
                org: self.org.clone(),
                workload: self.workload.clone(),
                host: self.host.clone(),
                ts_ns: self.ts_ns,
                pid: self.pid,
                ppid: self.ppid,
                uid: self.uid,
                gid: self.gid,
                comm: self.comm.clone(),
                parent_comm: self.parent_comm.clone(),
                exe: self.exe.clone(),
                cgroup: self.cgroup.clone(),
                source: self.source.clone(),
                detail,
            }),
            anomaly_score: self.anomaly_score,
            nearest_distance: self.nearest_distance,
            threat_category: self.threat_category.clone(),
            tactic: self.tactic.clone(),
            technique: self.technique.clone(),
            confidence: self.confidence,
            verdict: verdict as i32,
            explanation: self.explanation.clone(),
            contributions: (0..self.contrib_features.len())
                .map(|i| Contribution {
                    feature: self.contrib_features[i].clone(),
                    value: self.contrib_values.get(i).copied().unwrap_or_default(),
                    shap: self.contrib_shap.get(i).copied().unwrap_or_default(),
                    sentence: self.contrib_sentences.get(i).cloned().unwrap_or_default(),
                })
                .collect(),
            scored_at_ns: self.scored_at_ns,
            scorer_version: self.scorer_version.clone(),
            baseline_size: self.baseline_size,
            learned: self.learned != 0,
            behaviour_key: self.behaviour_key,
            suppressed_by: self.suppressed_by.clone(),
            signature_id: self.signature_id.clone(),
        }
    }
}

/// The `ts` column — partition, sort and retention key — of an event: its
/// own time, clamped to a window around when it was scored (from
/// `retention_days - 1` days before to an hour after). A host with a
/// skewed clock cannot expire its own evidence at once or park it in the
/// future, and one insert never spans more than `retention_days + 1` daily
/// partitions. The event's own time stays in `ts_ns`.
pub fn clamped_ts(ts_ns: u64, scored_at_ns: u64, retention_days: u32) -> u32 {
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    let t = if scored_at_ns == 0 {
        ts_ns
    } else {
        let lo = scored_at_ns
            .saturating_sub(u64::from(retention_days.saturating_sub(1).max(1)) * DAY_NS);
        let hi = scored_at_ns.saturating_add(DAY_NS / 24);
        ts_ns.clamp(lo, hi)
    };
    u32::try_from(t / 1_000_000_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_timestamps_are_clamped_for_partitioning_only() {
        let now = 1_763_800_000 * 1_000_000_000u64;
        let day = 86_400u32;
        let secs = (now / 1_000_000_000) as u32;
        // In the window: its own time.
        assert_eq!(clamped_ts(now - 3_600_000_000_000, now, 30), secs - 3600);
        // A clock years behind: kept for at least a day before retention.
        assert_eq!(clamped_ts(1_000_000_000, now, 30), secs - 29 * day);
        // A clock in the future: an hour ahead at most.
        assert_eq!(clamped_ts(u64::MAX, now, 30), secs + 3600);
        // Unknown scoring time: the event's own.
        assert_eq!(clamped_ts(5_000_000_000, 0, 30), 5);
    }
    use outlier_proto::{Connect, Event, Verdict};

    #[test]
    fn connect_event_maps_to_columns() {
        let s = ScoredEvent {
            event: Some(Event {
                event_id: "e".into(),
                ts_ns: 1_763_800_000_123_456_789,
                detail: Some(Detail::Connect(Connect {
                    family: outlier_proto::AddressFamily::Inet6 as i32,
                    remote_ip: "::1".into(),
                    remote_port: 4444,
                    protocol: Protocol::Udp as i32,
                    ..Connect::default()
                })),
                ..Event::default()
            }),
            anomaly_score: 0.5,
            verdict: Verdict::Warn as i32,
            contributions: vec![Contribution {
                feature: "net_port_suspicious".into(),
                value: 1.0,
                shap: 0.75,
                sentence: "outbound connection to rare port 4444".into(),
            }],
            baseline_size: 17,
            learned: true,
            ..ScoredEvent::default()
        };
        let r = EventRow::from_scored(&s);
        assert_eq!(
            (r.kind.as_str(), r.ts, r.remote_port, r.protocol.as_str()),
            ("connect", 1_763_800_000, 4444, "udp")
        );
        assert_eq!(r.verdict, "warn");
        let back = r.to_scored();
        assert_eq!(back.event, s.event);
        assert_eq!(back.verdict(), Verdict::Warn);
        assert_eq!(back.contributions, s.contributions);
        assert_eq!((back.baseline_size, back.learned), (17, true));
    }
}
