//! Fleet immune memory: behaviours confirmed malicious on one host,
//! recognised on every host of the org. Signatures travel on the compacted
//! signatures topic; every scorer follows it into a [`Signatures`] set and
//! checks every event: the signatures of the event's org and program are
//! looked up by name (no allocation), then the event's embedding is
//! compared with each of theirs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outlier_proto::{Event, Signature};
use tokio_util::sync::CancellationToken;

use crate::featurize::{DIM, Embedding, FEATURIZER_VERSION, cosine_distance};
use crate::kafka::KafkaConfig;
use crate::telemetry::{Check, Health};

/// Cosine distance within which an event matches a signature, unless the
/// signature says otherwise: the same behaviour up to volatile details.
pub const DEFAULT_MAX_DISTANCE: f32 = 0.05;
/// Signatures kept per org (the topic is operator-written; bounded anyway).
pub const MAX_PER_ORG: usize = 100_000;

/// A signature an event matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub signature_id: String,
    pub tactic: String,
    pub technique: String,
    pub summary: String,
    pub reason: String,
    pub host: String,
    pub distance: f32,
}

struct Compiled {
    id: String,
    kind: String,
    embedding: Embedding,
    max_distance: f32,
    expires_ns: u64,
}

#[derive(Default)]
struct Index {
    /// org → program → active signatures.
    by_program: HashMap<String, HashMap<String, Vec<Compiled>>>,
    /// org → id → the signature as published (revoked and expired too).
    all: HashMap<String, HashMap<String, Signature>>,
}

/// Why a signature cannot be used.
pub fn validate(s: &Signature) -> Result<(), String> {
    crate::names::validate("org", &s.org).map_err(|e| e.to_string())?;
    if s.signature_id.is_empty() {
        return Err("signature without an id".into());
    }
    if s.featurizer_version != FEATURIZER_VERSION {
        return Err(format!(
            "featurizer version {} (this build: {FEATURIZER_VERSION})",
            s.featurizer_version
        ));
    }
    if s.embedding.len() != DIM || s.embedding.iter().any(|x| !x.is_finite()) {
        return Err(format!("embedding: {DIM} finite values expected"));
    }
    if !matches!(s.kind.as_str(), "exec" | "connect" | "open") {
        return Err(format!("kind `{}`: exec, connect or open", s.kind));
    }
    if s.program.is_empty() {
        return Err("program: required".into());
    }
    if !(s.max_distance > 0.0 && s.max_distance <= 0.5) {
        return Err(format!("max_distance {}: in (0, 0.5]", s.max_distance));
    }
    Ok(())
}

/// The signatures of every org, as the topic last said.
#[derive(Clone, Default)]
pub struct Signatures {
    inner: Arc<RwLock<Index>>,
}

impl Signatures {
    /// Takes a record of the topic: a new signature or a new version of
    /// one (revoked). Invalid records are refused with the reason.
    pub fn apply(&self, s: Signature) -> Result<(), String> {
        validate(&s)?;
        let mut idx = self.inner.write().expect("signatures lock");
        let org_all = idx.all.entry(s.org.clone()).or_default();
        if !org_all.contains_key(&s.signature_id) && org_all.len() >= MAX_PER_ORG {
            return Err(format!("org {}: {MAX_PER_ORG} signatures already", s.org));
        }
        org_all.insert(s.signature_id.clone(), s.clone());
        let list = idx
            .by_program
            .entry(s.org.clone())
            .or_default()
            .entry(s.program.clone())
            .or_default();
        list.retain(|c| c.id != s.signature_id);
        if !s.revoked {
            let mut embedding = [0.0; DIM];
            embedding.copy_from_slice(&s.embedding);
            list.push(Compiled {
                id: s.signature_id,
                kind: s.kind,
                embedding,
                max_distance: s.max_distance,
                expires_ns: s.expires_ns,
            });
        }
        Ok(())
    }

    /// The nearest signature `e` (embedded as `v`) matches at `now_ns`.
    pub fn matching(&self, e: &Event, v: &Embedding, now_ns: u64) -> Option<Match> {
        let idx = self.inner.read().expect("signatures lock");
        let list = idx.by_program.get(&e.org)?.get(e.program_name())?;
        let kind = e.kind_name();
        let (c, distance) = list
            .iter()
            .filter(|c| c.kind == kind && now_ns < c.expires_ns)
            .map(|c| (c, cosine_distance(&c.embedding, v)))
            .filter(|(c, d)| *d <= c.max_distance)
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        let s = idx.all.get(&e.org)?.get(&c.id)?;
        Some(Match {
            signature_id: s.signature_id.clone(),
            tactic: s.tactic.clone(),
            technique: s.technique.clone(),
            summary: s.summary.clone(),
            reason: s.reason.clone(),
            host: s.host.clone(),
            distance,
        })
    }

    pub fn get(&self, org: &str, id: &str) -> Option<Signature> {
        let idx = self.inner.read().expect("signatures lock");
        idx.all.get(org)?.get(id).cloned()
    }

    /// The org's signatures (active only unless `all`), newest first.
    pub fn list(&self, org: &str, all: bool, now_ns: u64) -> Vec<Signature> {
        let idx = self.inner.read().expect("signatures lock");
        let mut out: Vec<Signature> = idx
            .all
            .get(org)
            .map(|m| {
                m.values()
                    .filter(|s| all || (!s.revoked && now_ns < s.expires_ns))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|s| (std::cmp::Reverse(s.created_ns), s.signature_id.clone()));
        out
    }

    /// Active signatures of every org.
    pub fn active(&self, now_ns: u64) -> usize {
        let idx = self.inner.read().expect("signatures lock");
        idx.all
            .values()
            .flat_map(|m| m.values())
            .filter(|s| !s.revoked && now_ns < s.expires_ns)
            .count()
    }
}

impl crate::compacted::RuleSet for Signatures {
    type Rule = Signature;
    fn apply(&self, rule: Signature) -> Result<(), String> {
        Signatures::apply(self, rule)
    }
    fn status(&self) -> String {
        format!("{} active signatures", self.active(crate::now_ns()))
    }
}

/// Reads the whole signatures topic into `set` and follows it until
/// `shutdown` fires (see [`crate::compacted::follow`]; health check
/// "signatures").
pub async fn follow(
    kafka: KafkaConfig,
    group_prefix: &str,
    set: Signatures,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka.topics.signatures.clone();
    let group = format!("{group_prefix}-signatures");
    crate::compacted::follow_set(
        kafka,
        topic,
        group,
        Check::Signatures,
        set,
        health,
        shutdown,
    )
    .await
}

/// Publishes a signature (or its new version) on the signatures topic.
pub async fn publish(
    producer: &rdkafka::producer::FutureProducer,
    topics: &crate::kafka::Topics,
    s: &Signature,
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    crate::compacted::publish(
        producer,
        &topics.signatures,
        &s.org,
        &s.signature_id,
        s,
        timeout,
    )
    .await
}

/// A signature of `e`'s behaviour (embedded by this build's featurizer).
pub fn signature_of(e: &Event, id: String) -> Signature {
    Signature {
        signature_id: id,
        org: e.org.clone(),
        embedding: crate::featurize::embed(e).to_vec(),
        featurizer_version: FEATURIZER_VERSION,
        kind: e.kind_name().to_string(),
        program: e.program_name().to_string(),
        max_distance: DEFAULT_MAX_DISTANCE,
        event_id: e.event_id.clone(),
        host: e.host.clone(),
        workload: e.workload.clone(),
        ..Signature::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::featurize::embed;
    use outlier_proto::{Exec, event::Detail};

    fn exec(org: &str, host: &str, argv: &[&str]) -> Event {
        Event {
            org: org.into(),
            workload: "web".into(),
            host: host.into(),
            comm: argv[0].into(),
            exe: format!("/usr/bin/{}", argv[0]),
            parent_comm: "sh".into(),
            detail: Some(Detail::Exec(Exec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Exec::default()
            })),
            ..Event::default()
        }
    }

    fn sig(e: &Event, id: &str) -> Signature {
        let mut s = signature_of(e, id.into());
        s.expires_ns = 1_000;
        s.reason = "confirmed".into();
        s
    }

    #[test]
    fn the_same_behaviour_matches_on_any_host_of_the_org_and_nothing_else() {
        let set = Signatures::default();
        let seen = exec(
            "acme",
            "web-1",
            &["python3", "/tmp/.cache/u.py", "--beacon", "203.0.113.7"],
        );
        set.apply(sig(&seen, "s1")).unwrap();
        // The same behaviour elsewhere, with a volatile detail changed.
        let again = exec(
            "acme",
            "db-7",
            &["python3", "/tmp/.cache/u.py", "--beacon", "203.0.113.9"],
        );
        let m = set.matching(&again, &embed(&again), 10).expect("matches");
        assert_eq!(m.signature_id, "s1");
        assert!(m.distance <= DEFAULT_MAX_DISTANCE);
        // Another script of the same program, another org, another kind,
        // after expiry: no.
        let other = exec("acme", "db-7", &["python3", "manage.py", "migrate"]);
        assert_eq!(set.matching(&other, &embed(&other), 10), None);
        let other_org = exec(
            "globex",
            "web-1",
            &["python3", "/tmp/.cache/u.py", "--beacon", "203.0.113.7"],
        );
        assert_eq!(set.matching(&other_org, &embed(&other_org), 10), None);
        assert_eq!(set.matching(&again, &embed(&again), 1_000), None, "expired");
        // Revoked.
        let mut r = sig(&seen, "s1");
        r.revoked = true;
        set.apply(r).unwrap();
        assert_eq!(set.matching(&again, &embed(&again), 10), None);
        assert_eq!(set.list("acme", false, 10).len(), 0);
        assert_eq!(set.list("acme", true, 10).len(), 1);
    }

    #[test]
    fn unusable_signatures_are_refused() {
        let e = exec("acme", "h", &["id"]);
        let set = Signatures::default();
        let mut s = sig(&e, "s");
        s.featurizer_version += 1;
        assert!(set.apply(s).unwrap_err().starts_with("featurizer version"));
        let mut s = sig(&e, "s");
        s.embedding.pop();
        assert!(set.apply(s).is_err());
        let mut s = sig(&e, "s");
        s.embedding[0] = f32::NAN;
        assert!(set.apply(s).is_err());
        let mut s = sig(&e, "s");
        s.max_distance = 0.9;
        assert!(set.apply(s).is_err());
        let mut s = sig(&e, "s");
        s.kind = "ptrace".into();
        assert!(set.apply(s).is_err());
        assert_eq!(set.active(0), 0);
    }
}
