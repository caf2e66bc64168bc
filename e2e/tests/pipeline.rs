//! The walking skeleton, every hop real: JSON Lines → collector replay →
//! Kafka → scorer (LanceDB baseline) → Kafka → indexer → ClickHouse.
#![cfg(feature = "services")]

use std::collections::BTreeMap;
use std::time::Duration;

use outlier_collector::publish::Publisher;
use outlier_collector::replay::replay;
use outlier_e2e::TestEnv;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Seen {
    event_id: String,
    n: u64,
    score: f32,
    verdict: String,
    kind: String,
}

fn replay_file(org: &str) -> String {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut lines = Vec::new();
    let nginx = |id: &str, ts: u64| {
        format!(
            r#"{{"event_id":"{id}","ts_ns":{ts},"org":"{org}","workload":"web","host":"web-1","kind":"exec","pid":4242,"ppid":1,"uid":33,"gid":33,"comm":"nginx","parent_comm":"nginx","exe":"/usr/sbin/nginx","argv":["nginx: worker process"],"cwd":"/"}}"#
        )
    };
    lines.push(nginx("e-1", t0));
    lines.push("this line is not json".to_string());
    for i in 2..=5 {
        lines.push(nginx(&format!("e-{i}"), t0 + i * 1_000_000));
    }
    lines.push(format!(
        r#"{{"org":"{org}","workload":"web","host":"web-1","kind":"teleport"}}"#
    ));
    lines.push(format!(
        r#"{{"event_id":"e-6","ts_ns":{t6},"org":"{org}","workload":"web","host":"web-1","kind":"connect","pid":4243,"comm":"bash","parent_comm":"nginx","remote_ip":"203.0.113.7","remote_port":4444,"local_port":51544,"protocol":"tcp"}}"#,
        t6 = t0 + 10_000_000
    ));
    lines.push(format!(
        r#"{{"event_id":"e-7","ts_ns":{t7},"org":"{org}","workload":"web","host":"web-1","kind":"open","pid":4244,"comm":"cat","path":"/etc/shadow","flags":0}}"#,
        t7 = t0 + 20_000_000
    ));
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_events_are_scored_and_indexed_exactly_once() {
    let env = TestEnv::new("skeleton").await;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(env.indexer_config(), shutdown.clone()));

    let org = format!("org-{}", env.id);
    let publisher = Publisher::new(&env.kafka, "e2e").unwrap();
    let stats = replay(replay_file(&org).as_bytes(), &publisher)
        .await
        .unwrap();
    assert_eq!(stats.lines, 9);
    assert_eq!(stats.invalid, 2, "malformed lines are skipped, not fatal");
    assert_eq!(stats.published, 7);
    assert_eq!(stats.failed, 0);

    // Wait until all seven events are queryable in ClickHouse.
    let ch = env.clickhouse();
    let mut rows: Vec<Seen> = Vec::new();
    for _ in 0..240 {
        let res = ch
            .query(
                "SELECT event_id, count() AS n, any(anomaly_score) AS score, any(verdict) AS verdict, any(kind) AS kind \
                 FROM security_events WHERE org = ? GROUP BY event_id ORDER BY event_id",
            )
            .bind(&org)
            .fetch_all::<Seen>()
            .await;
        if let Ok(r) = res {
            rows = r;
            if rows.len() == 7 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let by_id: BTreeMap<&str, &Seen> = rows.iter().map(|r| (r.event_id.as_str(), r)).collect();
    assert_eq!(
        by_id.len(),
        7,
        "every replayed event reaches ClickHouse: {rows:?}"
    );
    for r in &rows {
        assert_eq!(r.n, 1, "event {} stored exactly once", r.event_id);
    }
    // First behaviour of a workload never seen: 1.0, an alert.
    assert_eq!(by_id["e-1"].score, 1.0);
    assert_eq!(by_id["e-1"].verdict, "alert");
    assert_eq!(by_id["e-1"].kind, "exec");
    // The same behaviour repeated: near 0, ok.
    for id in ["e-2", "e-3", "e-4", "e-5"] {
        assert!(by_id[id].score < 0.05, "{id} scored {}", by_id[id].score);
        assert_eq!(by_id[id].verdict, "ok");
    }
    // Different behaviour of the same workload is not "known".
    assert!(
        by_id["e-6"].score > 0.5,
        "connect scored {}",
        by_id["e-6"].score
    );
    assert_eq!(by_id["e-6"].kind, "connect");
    assert_eq!(by_id["e-7"].kind, "open");

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_records_go_to_the_dead_letter_topic_with_a_reason() {
    let env = TestEnv::new("dlq").await;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));

    let producer: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    producer
        .send(
            FutureRecord::to(&env.kafka.topics.events)
                .key("x/y")
                .payload(&b"\xff\xfe not protobuf"[..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let dlq: StreamConsumer = env
        .kafka
        .consumer_config("e2e-dlq", &format!("{}-dlq", env.id))
        .create()
        .unwrap();
    dlq.subscribe(&[&env.kafka.topics.deadletter]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(60), dlq.recv())
        .await
        .expect("a dead-lettered record within 60s")
        .unwrap();
    assert_eq!(
        msg.payload(),
        Some(&b"\xff\xfe not protobuf"[..]),
        "original bytes kept"
    );
    let reason = outlier_e2e::dlq_reason(&msg).expect("reason header");
    assert!(reason.contains("not an outlier.v1.Event"), "{reason}");

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_wait_for_unreachable_dependencies_instead_of_crashing() {
    let env = TestEnv::new("unreachable").await;
    let mut scorer_cfg = env.scorer_config();
    scorer_cfg.kafka.brokers = "127.0.0.1:1".to_string();
    scorer_cfg.http_addr = outlier_e2e::free_addr();
    let mut indexer_cfg = env.indexer_config();
    indexer_cfg.clickhouse.url = "http://127.0.0.1:1".to_string();
    indexer_cfg.http_addr = outlier_e2e::free_addr();
    let (scorer_http, indexer_http) = (scorer_cfg.http_addr, indexer_cfg.http_addr);

    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(scorer_cfg, shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(indexer_cfg, shutdown.clone()));
    // Alive and retrying: each answers its health check, unhealthy, naming
    // the dependency it waits for (a hung or crashed service would not).
    for (addr, dependency) in [(scorer_http, "kafka"), (indexer_http, "clickhouse")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = outlier_e2e::http_get(addr, "/health").await;
            if let Some((status, body)) = &answer
                && *status == 503
                && body.contains(&format!("\"{dependency}\":{{\"ok\":false"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr}/health does not report {dependency} down: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(!scorer.is_finished(), "scorer keeps retrying Kafka");
    assert!(!indexer.is_finished(), "indexer keeps retrying ClickHouse");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), scorer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), indexer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
