//! Fleet immune memory through the real services: an attack flagged on one
//! host is grouped into an incident; an operator confirms the incident
//! malicious (gRPC ConfirmIncident); its behaviours become signatures on
//! the signatures topic; the scorer then alerts the same behaviour on
//! another host whose baseline had learned it as normal — within 5 s — and
//! stops once the signature is revoked.
#![cfg(feature = "services")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use outlier_collector::publish::Publisher;
use outlier_e2e::{TestEnv, TopicReader, exec, now_ns};
use outlier_proto::incident_service_client::IncidentServiceClient;
use outlier_proto::signature_service_client::SignatureServiceClient;
use outlier_proto::{
    ConfirmIncidentRequest, Event, GetIncidentRequest, ListIncidentsRequest, ListSignaturesRequest,
    RevokeSignatureRequest, Verdict,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const IMPLANT: &[&str] = &["python3", "/tmp/.cache/u.py", "--beacon", "203.0.113.7"];

fn on(
    org: &str,
    id: &str,
    workload: &str,
    host: &str,
    argv: &[&str],
    pid: u32,
    ppid: u32,
) -> Event {
    let mut e = exec(id, org, workload, now_ns(), argv);
    e.host = host.into();
    e.pid = pid;
    e.ppid = ppid;
    e.parent_comm = "sh".into();
    e
}

async fn send(p: &Publisher, e: &Event) {
    p.send(e).await.unwrap().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmed_incident_becomes_every_hosts_instant_recognition() {
    let env = TestEnv::new("immune").await;
    let stop = CancellationToken::new();
    let mut scfg = env.scorer_config();
    scfg.http_addr = outlier_e2e::free_addr();
    let scorer_http = scfg.http_addr;
    let scorer = tokio::spawn(outlier_scorer::run(scfg, stop.clone()));
    // A second scorer process elsewhere in the fleet (its own group and
    // events, none of this test's): the signatures must reach it too.
    let mut other = env.scorer_config();
    other.group_id = format!("{}-other-scorer", env.id);
    other.kafka.topics.events = format!("{}.other-events", env.id);
    other.kafka.topics.feedback = format!("{}.other-feedback", env.id);
    other.baseline.uri = env.dir.path().join("other-baselines").display().to_string();
    other.http_addr = outlier_e2e::free_addr();
    let other_http = other.http_addr;
    env.kafka
        .ensure_topics(&[
            (&other.kafka.topics.events, 1),
            (&other.kafka.topics.feedback, 1),
        ])
        .await
        .unwrap();
    let other_scorer = tokio::spawn(outlier_scorer::run(other, stop.clone()));
    let icfg = env.indexer_config();
    let addr = icfg.grpc_addr;
    let indexer = tokio::spawn(outlier_indexer::run(icfg, stop.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let p = Publisher::new(&env.kafka, "e2e-immune").unwrap();
    let scored = TopicReader::new(&env.kafka, &env.kafka.topics.scored);
    let alerts = TopicReader::new(&env.kafka, &env.kafka.topics.alerts);

    // Host api-1 learned the implant's behaviour as normal while young
    // (a poisoned warm-up), along with its routine.
    let mut n = 0;
    for round in 0..3 {
        for argv in [
            IMPLANT,
            &["python3", "manage.py", "check"][..],
            &["gunicorn", "app:app"],
        ] {
            n += 1;
            send(
                &p,
                &on(
                    &org,
                    &format!("api-{round}-{n}"),
                    "api",
                    "api-1",
                    argv,
                    100 + n,
                    99,
                ),
            )
            .await;
        }
    }
    let last = format!("api-2-{n}");
    scored
        .find(&last, Duration::from_secs(120))
        .await
        .expect("api routine scored");
    send(&p, &on(&org, "api-known", "api", "api-1", IMPLANT, 300, 99)).await;
    let known = scored
        .find("api-known", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        known.verdict(),
        Verdict::Ok,
        "api-1's baseline knows it: {}",
        known.explanation
    );
    assert!(known.signature_id.is_empty());

    // web-1 has its own routine...
    for i in 0..20u32 {
        let argv: &[&str] = if i % 2 == 0 {
            &["nginx", "-s", "reload"]
        } else {
            &["curl", "-s", "http://127.0.0.1/health"]
        };
        send(
            &p,
            &on(
                &org,
                &format!("web-{i}"),
                "web",
                "web-1",
                argv,
                1000 + i,
                999,
            ),
        )
        .await;
    }
    scored
        .find("web-19", Duration::from_secs(60))
        .await
        .expect("web routine scored");
    // ... and there the same implant is dropped by a shell a PHP worker spawned.
    send(
        &p,
        &on(&org, "w-shell", "web", "web-1", &["sh", "-i"], 2001, 2000),
    )
    .await;
    send(
        &p,
        &on(&org, "w-implant", "web", "web-1", IMPLANT, 2002, 2001),
    )
    .await;
    let implant = scored
        .find("w-implant", Duration::from_secs(60))
        .await
        .expect("scored");
    assert!(
        matches!(implant.verdict(), Verdict::Warn | Verdict::Alert),
        "the implant on web-1 was not flagged: {:?} {} {}",
        implant.verdict(),
        implant.anomaly_score,
        implant.explanation
    );
    alerts
        .find("w-implant", Duration::from_secs(30))
        .await
        .expect("on the alerts topic");

    let channel = loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut incidents = IncidentServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let incident = loop {
        let list = incidents
            .list_incidents(ListIncidentsRequest {
                org: org.clone(),
                ..ListIncidentsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .incidents;
        if let Some(i) = list
            .into_iter()
            .find(|i| i.event_ids.contains(&"w-implant".to_string()))
        {
            break i;
        }
        assert!(Instant::now() < deadline, "no incident holds the implant");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(incident.host, "web-1");

    // The operator looks at it first: its events as stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = incidents
            .get_incident(GetIncidentRequest {
                org: org.clone(),
                incident_id: incident.incident_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.events.len() == incident.event_count as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the incident's events were not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Confirmed malicious: a signature per behaviour of the incident.
    let mut sigs = SignatureServiceClient::new(channel);
    let e = sigs
        .confirm_incident(ConfirmIncidentRequest {
            org: org.clone(),
            incident_id: incident.incident_id.clone(),
            ..ConfirmIncidentRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::InvalidArgument,
        "a reason is required"
    );
    let made = sigs
        .confirm_incident(ConfirmIncidentRequest {
            org: org.clone(),
            incident_id: incident.incident_id.clone(),
            reason: "implant beaconing to 203.0.113.7, SEC-42".into(),
            expires_in_s: 0,
        })
        .await
        .expect("ConfirmIncident")
        .into_inner()
        .signatures;
    let confirmed = Instant::now();
    // Every scorer holds the signatures within 5 s (their health says how
    // many they apply).
    let want = format!("{} active signatures", made.len());
    for (name, addr) in [("scorer", scorer_http), ("other scorer", other_http)] {
        loop {
            let body = outlier_e2e::http_get(addr, "/health").await.map(|(_, b)| b);
            if body.as_deref().is_some_and(|b| b.contains(&want)) {
                break;
            }
            assert!(
                confirmed.elapsed() < Duration::from_secs(5),
                "{name} does not hold the signatures 5 s after confirmation: {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("signatures on every scorer after {:?}", confirmed.elapsed());
    let programs: HashSet<&str> = made.iter().map(|s| s.program.as_str()).collect();
    assert!(programs.contains("python3"), "{made:#?}");
    assert_eq!(
        made.len(),
        incident.event_count as usize,
        "one per distinct behaviour"
    );
    assert!(
        made.iter()
            .all(|s| s.host == "web-1" && s.incident_id == incident.incident_id)
    );

    // api-1 now alerts on what its baseline calls normal.
    let mut i = 0;
    let hit = loop {
        i += 1;
        let id = format!("api-again-{i}");
        send(&p, &on(&org, &id, "api", "api-1", IMPLANT, 400 + i, 99)).await;
        let s = scored
            .find(&id, Duration::from_secs(30))
            .await
            .expect("scored");
        if !s.signature_id.is_empty() {
            break s;
        }
        assert!(
            confirmed.elapsed() < Duration::from_secs(5),
            "no signature match 5 s after confirmation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = confirmed.elapsed();
    eprintln!("signature effective on another host after {took:?} ({i} repeats)");
    assert!(took < Duration::from_secs(5));
    assert_eq!(hit.verdict(), Verdict::Alert);
    assert!(
        hit.anomaly_score < 0.1,
        "its baseline still knows it: {}",
        hit.anomaly_score
    );
    assert!(
        hit.explanation.starts_with("matches fleet signature"),
        "{}",
        hit.explanation
    );
    assert!(!hit.learned);
    let hit_id = hit.event.as_ref().unwrap().event_id.clone();
    alerts
        .find(&hit_id, Duration::from_secs(30))
        .await
        .expect("on the alerts topic");

    // The same program doing something else is not matched.
    send(
        &p,
        &on(
            &org,
            "api-other",
            "api",
            "api-1",
            &["python3", "manage.py", "check"],
            500,
            99,
        ),
    )
    .await;
    let other = scored
        .find("api-other", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(other.signature_id.is_empty());
    assert_eq!(other.verdict(), Verdict::Ok);

    // Listed for the org only; revoked, api-1 is back to its baseline.
    let listed = sigs
        .list_signatures(ListSignaturesRequest {
            org: org.clone(),
            all: false,
        })
        .await
        .unwrap()
        .into_inner()
        .signatures;
    assert_eq!(listed.len(), made.len());
    assert!(
        sigs.list_signatures(ListSignaturesRequest {
            org: "someone-else".into(),
            all: true
        })
        .await
        .unwrap()
        .into_inner()
        .signatures
        .is_empty()
    );
    for s in &made {
        sigs.revoke_signature(RevokeSignatureRequest {
            org: org.clone(),
            signature_id: s.signature_id.clone(),
        })
        .await
        .expect("revoke");
    }
    let revoked = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let id = format!("api-after-{i}");
        send(&p, &on(&org, &id, "api", "api-1", IMPLANT, 600 + i, 99)).await;
        let s = scored
            .find(&id, Duration::from_secs(30))
            .await
            .expect("scored");
        if s.signature_id.is_empty() {
            assert_eq!(s.verdict(), Verdict::Ok, "{}", s.explanation);
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "still matched 5 s after revoking"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop.cancel();
    scorer.await.unwrap().unwrap();
    other_scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}
