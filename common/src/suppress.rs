//! Suppressions: operators' rules that keep matching flagged events from
//! alerting. The rules travel on the compacted suppressions topic; every
//! scorer (which applies them before alerting) and indexer (which lists
//! them) reads the whole topic into a [`Suppressions`] set and follows it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outlier_proto::{Event, Suppression, event::Detail};
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaConfig;
use crate::telemetry::{Check, Health};

/// Longest glob of a condition.
pub const MAX_GLOB: usize = 512;
/// Rules kept per org (the topic is operator-written, but bounded anyway).
pub const MAX_RULES_PER_ORG: usize = 10_000;

/// `*` matches any run of characters, `?` one character; everything else
/// itself. At most pattern × text steps (only the last star backtracks).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Why a rule cannot be made: the field named.
pub fn validate(s: &Suppression) -> Result<(), String> {
    crate::names::validate("org", &s.org).map_err(|e| e.to_string())?;
    let conditions = [
        ("workload", &s.workload),
        ("host", &s.host),
        ("program", &s.program),
        ("argv", &s.argv),
        ("path", &s.path),
        ("remote", &s.remote),
    ];
    if conditions.iter().all(|(_, v)| v.is_empty()) {
        return Err(
            "a suppression needs at least one condition (workload, host, program, argv, path or remote)"
                .into(),
        );
    }
    for (name, v) in conditions {
        if v.len() > MAX_GLOB {
            return Err(format!("{name}: longer than {MAX_GLOB} bytes"));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("{name}: control characters are not allowed"));
        }
        if !v.is_empty() && v.chars().all(|c| c == '*') {
            return Err(format!(
                "{name}: `{v}` matches everything; leave it out instead"
            ));
        }
    }
    if s.reason.trim().is_empty() {
        return Err("reason: say why (it is shown with the rule)".into());
    }
    Ok(())
}

/// Whether `s` applies to `e` at `now_ns`.
pub fn applies(s: &Suppression, e: &Event, now_ns: u64) -> bool {
    if s.revoked || now_ns >= s.expires_ns || s.org != e.org {
        return false;
    }
    let cond = |pat: &str, value: Option<&str>| {
        pat.is_empty() || value.is_some_and(|v| glob_matches(pat, v))
    };
    let argv = match &e.detail {
        Some(Detail::Exec(x)) => Some(x.argv.join(" ")),
        _ => None,
    };
    let path = match &e.detail {
        Some(Detail::Open(o)) => Some(o.path.as_str()),
        _ => None,
    };
    let remote = match &e.detail {
        Some(Detail::Connect(c)) => Some(format!("{}:{}", c.remote_ip, c.remote_port)),
        _ => None,
    };
    cond(&s.workload, Some(&e.workload))
        && cond(&s.host, Some(&e.host))
        && cond(&s.program, Some(e.program_name()))
        && cond(&s.argv, argv.as_deref())
        && cond(&s.path, path)
        && cond(&s.remote, remote.as_deref())
}

/// The rules of every org, as the topic last said.
#[derive(Clone, Default)]
pub struct Suppressions {
    inner: Arc<RwLock<HashMap<String, Vec<Suppression>>>>,
}

impl Suppressions {
    /// Takes a record of the topic: a new rule, or a new version of one
    /// (revoked, or changed). Invalid records are refused with the reason.
    pub fn apply(&self, s: Suppression) -> Result<(), String> {
        if s.suppression_id.is_empty() {
            return Err("suppression without an id".into());
        }
        validate(&s)?;
        let mut map = self.inner.write().expect("suppressions lock");
        let rules = map.entry(s.org.clone()).or_default();
        if let Some(r) = rules
            .iter_mut()
            .find(|r| r.suppression_id == s.suppression_id)
        {
            *r = s;
        } else if rules.len() < MAX_RULES_PER_ORG {
            rules.push(s);
        } else {
            return Err(format!("org {}: {MAX_RULES_PER_ORG} rules already", s.org));
        }
        Ok(())
    }

    /// The id of the first rule that applies to `e` now.
    pub fn matching(&self, e: &Event, now_ns: u64) -> Option<String> {
        let map = self.inner.read().expect("suppressions lock");
        map.get(&e.org)?
            .iter()
            .find(|s| applies(s, e, now_ns))
            .map(|s| s.suppression_id.clone())
    }

    /// One rule of an org.
    pub fn get(&self, org: &str, id: &str) -> Option<Suppression> {
        let map = self.inner.read().expect("suppressions lock");
        map.get(org)?
            .iter()
            .find(|s| s.suppression_id == id)
            .cloned()
    }

    /// The org's rules (active only unless `all`), newest first.
    pub fn list(&self, org: &str, all: bool, now_ns: u64) -> Vec<Suppression> {
        let map = self.inner.read().expect("suppressions lock");
        let mut out: Vec<Suppression> = map
            .get(org)
            .map(|r| {
                r.iter()
                    .filter(|s| all || (!s.revoked && now_ns < s.expires_ns))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|s| std::cmp::Reverse(s.created_ns));
        out
    }

    /// Active rules of every org.
    pub fn active(&self, now_ns: u64) -> usize {
        let map = self.inner.read().expect("suppressions lock");
        map.values()
            .flatten()
            .filter(|s| !s.revoked && now_ns < s.expires_ns)
            .count()
    }
}

impl crate::compacted::RuleSet for Suppressions {
    type Rule = Suppression;
    fn apply(&self, rule: Suppression) -> Result<(), String> {
        Suppressions::apply(self, rule)
    }
    fn status(&self) -> String {
        format!("{} active rules", self.active(crate::now_ns()))
    }
}

/// Reads the whole suppressions topic into `set` and follows it until
/// `shutdown` fires (see [`crate::compacted::follow`]; health check
/// "suppressions").
pub async fn follow(
    kafka: KafkaConfig,
    group_prefix: &str,
    set: Suppressions,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka.topics.suppressions.clone();
    let group = format!("{group_prefix}-suppressions");
    crate::compacted::follow_set(
        kafka,
        topic,
        group,
        Check::Suppressions,
        set,
        health,
        shutdown,
    )
    .await
}

/// Publishes a rule (or its new version) on the suppressions topic.
pub async fn publish(
    producer: &rdkafka::producer::FutureProducer,
    topics: &crate::kafka::Topics,
    s: &Suppression,
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    crate::compacted::publish(
        producer,
        &topics.suppressions,
        &s.org,
        &s.suppression_id,
        s,
        timeout,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::{Connect, Exec, Open};

    #[test]
    fn globs() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches(
            "curl *|*bash",
            "curl -fsSL http://x/a.sh | bash"
        ));
        assert!(glob_matches(
            "/var/lib/postgresql/*/main/*",
            "/var/lib/postgresql/15/main/base/1"
        ));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(!glob_matches("*.sh", "x.shx"));
        assert!(glob_matches("*a*a*a*b", &("a".repeat(40) + "b")));
        assert!(
            !glob_matches("*a*a*a*b", &"a".repeat(2000)),
            "no exponential backtracking"
        );
        assert!(glob_matches("psql", "psql"));
        assert!(!glob_matches("psql", "psql2"));
    }

    fn rule(id: &str) -> Suppression {
        Suppression {
            suppression_id: id.into(),
            org: "acme".into(),
            host: "db-*".into(),
            argv: "su postgres -c psql *".into(),
            expires_ns: 2_000,
            reason: "monitoring".into(),
            ..Suppression::default()
        }
    }

    fn exec(host: &str, argv: &str) -> Event {
        Event {
            org: "acme".into(),
            workload: "db".into(),
            host: host.into(),
            exe: "/usr/bin/su".into(),
            detail: Some(Detail::Exec(Exec {
                argv: argv.split(' ').map(String::from).collect(),
                ..Exec::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn every_condition_must_hold_until_expiry_or_revocation() {
        let set = Suppressions::default();
        set.apply(rule("s1")).unwrap();
        let hit = exec("db-1", "su postgres -c psql -c select 1");
        assert_eq!(set.matching(&hit, 1_000).as_deref(), Some("s1"));
        assert_eq!(
            set.matching(&exec("web-1", "su postgres -c psql -c x"), 1_000),
            None
        );
        assert_eq!(set.matching(&exec("db-1", "su root -c sh"), 1_000), None);
        assert_eq!(set.matching(&hit, 2_000), None, "expired");
        let mut other_org = hit.clone();
        other_org.org = "globex".into();
        assert_eq!(set.matching(&other_org, 1_000), None);
        // An argv condition never matches a connect or an open.
        let mut conn = hit.clone();
        conn.detail = Some(Detail::Connect(Connect {
            remote_ip: "10.0.0.1".into(),
            remote_port: 5432,
            ..Connect::default()
        }));
        assert_eq!(set.matching(&conn, 1_000), None);
        let by_remote = Suppression {
            suppression_id: "s2".into(),
            org: "acme".into(),
            remote: "10.0.0.*:5432".into(),
            expires_ns: 2_000,
            reason: "replication".into(),
            ..Suppression::default()
        };
        set.apply(by_remote).unwrap();
        assert_eq!(set.matching(&conn, 1_000).as_deref(), Some("s2"));
        let mut open = hit.clone();
        open.detail = Some(Detail::Open(Open {
            path: "/etc/shadow".into(),
            ..Open::default()
        }));
        assert_eq!(set.matching(&open, 1_000), None);

        let mut revoked = rule("s1");
        revoked.revoked = true;
        set.apply(revoked).unwrap();
        assert_eq!(set.matching(&hit, 1_000), None, "revoked");
        assert_eq!(set.list("acme", false, 1_000).len(), 1);
        assert_eq!(set.list("acme", true, 1_000).len(), 2);
        assert_eq!(set.active(1_000), 1);
    }

    #[test]
    fn rules_without_conditions_reasons_or_with_match_all_globs_are_refused() {
        let mut r = rule("x");
        r.host.clear();
        r.argv.clear();
        assert!(validate(&r).unwrap_err().contains("at least one condition"));
        let mut r = rule("x");
        r.reason = " ".into();
        assert!(validate(&r).unwrap_err().starts_with("reason"));
        let mut r = rule("x");
        r.host = "**".into();
        assert!(validate(&r).unwrap_err().starts_with("host"));
        let mut r = rule("x");
        r.path = "a\u{1b}[2J".into();
        assert!(validate(&r).unwrap_err().starts_with("path"));
        let mut r = rule("x");
        r.org = String::new();
        assert!(validate(&r).is_err());
        assert!(
            Suppressions::default()
                .apply(Suppression::default())
                .is_err()
        );
    }
}
