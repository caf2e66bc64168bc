//! Fleet health through the real services: collectors' heartbeats travel on
//! their events topic, the scorer checks their org and forwards them, the
//! indexer keeps each host's latest in ClickHouse, and ListHosts (the
//! `outlier hosts` command) shows who reports and who went silent.
#![cfg(feature = "services")]

use std::time::Duration;

use outlier_collector::heartbeat::{Reporter, publish};
use outlier_e2e::{TestEnv, dlq_reason, now_ns};
use outlier_proto::event_query_client::EventQueryClient;
use outlier_proto::{Heartbeat, ListHostsRequest};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

fn beat(org: &str, host: &str, age_s: u64, captured: u64) -> Heartbeat {
    let mut h = Reporter {
        org: org.into(),
        host: host.into(),
        capture_mode: "ebpf".into(),
        started_ns: now_ns() - 3_600_000_000_000,
    }
    .heartbeat();
    h.ts_ns = now_ns() - age_s * 1_000_000_000;
    h.events_captured = captured;
    h
}

async fn hosts(
    q: &mut EventQueryClient<tonic::transport::Channel>,
    org: &str,
    silent_for_s: u64,
) -> Vec<(String, u64, u64)> {
    q.list_hosts(ListHostsRequest {
        org: org.into(),
        silent_for_s,
    })
    .await
    .expect("ListHosts")
    .into_inner()
    .hosts
    .into_iter()
    .map(|h| {
        let l = h.last.unwrap();
        (l.host, h.silent_for_s, l.events_captured)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_show_who_reports_and_who_went_silent() {
    let env = TestEnv::new("hosts").await;
    let shutdown = CancellationToken::new();
    let icfg = env.indexer_config();
    let addr = icfg.grpc_addr;
    let indexer = tokio::spawn(outlier_indexer::run(icfg, shutdown.clone()));
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let other = format!("x{}", &env.id[env.id.len() - 8..]);
    let producer: FutureProducer = env.kafka.producer_config("e2e-hb").create().unwrap();
    let events = env.kafka.topics.events.clone();
    publish(&producer, &events, &beat(&org, "web-1", 0, 100))
        .await
        .unwrap();
    publish(&producer, &events, &beat(&org, "db-1", 600, 50))
        .await
        .unwrap();
    publish(&producer, &events, &beat(&other, "x-1", 0, 1))
        .await
        .unwrap();
    // A heartbeat naming another org on an org's own topic is refused.
    let org_topic = env.kafka.topics.events_for_org(&org).unwrap();
    env.kafka.ensure_topics(&[(&org_topic, 3)]).await.unwrap();
    publish(&producer, &org_topic, &beat(&other, "forged", 0, 0))
        .await
        .unwrap();

    let channel = loop {
        if let Ok(c) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut q = EventQueryClient::new(channel);
    let mut all = Vec::new();
    for _ in 0..300 {
        all = hosts(&mut q, &org, 0).await;
        if all.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(all.len(), 2, "{all:?}");
    // Most silent first, with what each reported.
    assert_eq!((all[0].0.as_str(), all[0].2), ("db-1", 50));
    assert!((600..700).contains(&all[0].1), "{all:?}");
    assert_eq!((all[1].0.as_str(), all[1].2), ("web-1", 100));
    assert!(all[1].1 < 60, "{all:?}");
    let silent: Vec<_> = hosts(&mut q, &org, 300).await;
    assert_eq!(
        silent.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["db-1"]
    );

    // db-1 reports again: it is no longer silent.
    publish(&producer, &events, &beat(&org, "db-1", 0, 70))
        .await
        .unwrap();
    let mut now_silent = silent;
    for _ in 0..300 {
        now_silent = hosts(&mut q, &org, 300).await;
        if now_silent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(now_silent.is_empty(), "{now_silent:?}");
    // Each org sees only its hosts; the forged heartbeat was dead-lettered.
    let theirs = hosts(&mut q, &other, 0).await;
    assert_eq!(
        theirs.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["x-1"]
    );
    let dlq: StreamConsumer = env
        .kafka
        .consumer_config("e2e-hb-dlq", &format!("{}-dlq", env.id))
        .create()
        .unwrap();
    dlq.subscribe(&[&env.kafka.topics.deadletter]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
        .await
        .expect("a dead letter")
        .unwrap();
    let reason = dlq_reason(&m).unwrap_or_default();
    assert!(
        reason.contains("forged") || reason.contains(&other),
        "{reason}"
    );

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}
