//! Hostile input against the real Kafka, LanceDB and ClickHouse: records
//! that are valid by the contract but push every limit, and records that
//! can never succeed, mixed into the stream of another org. Each asserts
//! that the other org's events keep flowing within the poison budget, that
//! nothing is lost, that duplicates stay invisible, and that what cannot be
//! used is dead-lettered with a reason.
#![cfg(feature = "services")]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use outlier_e2e::{TestEnv, exec, now_ns};
use outlier_scorer::metrics::EvictionBound;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

async fn send(p: &FutureProducer, topic: &str, key: &str, payload: Vec<u8>) {
    p.send(
        FutureRecord::to(topic).key(key).payload(&payload),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Row {
    event_id: String,
    n: u64,
    ts: u32,
    ts_ns: u64,
}

async fn rows(env: &TestEnv, want: usize, timeout: Duration) -> BTreeMap<String, Row> {
    let ch = env.clickhouse();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = ch
            .query(
                "SELECT event_id, count() AS n, any(toUInt32(ts)) AS ts, any(ts_ns) AS ts_ns \
                 FROM security_events FINAL GROUP BY event_id",
            )
            .fetch_all::<Row>()
            .await
        {
            out = r.into_iter().map(|r| (r.event_id.clone(), r)).collect();
            if out.len() >= want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_records_never_stall_other_orgs() {
    let env = TestEnv::new("hostile").await;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(env.indexer_config(), shutdown.clone()));
    let p: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    let topic = &env.kafka.topics.events;
    let t0 = now_ns();

    // Names at the contract's limit (128 bytes each): a LanceDB table
    // name of 518 characters before names were bounded.
    let long_org = "o".repeat(128);
    let long_wl = "w".repeat(128);
    let long = exec(
        "long-names",
        &long_org,
        &long_wl,
        t0,
        &["systemctl", "status"],
    );
    // Over the record size limit.
    let big_arg = "A".repeat(300 * 1024);
    let oversize = exec("oversize", "hostile", "web", t0, &["echo", &big_arg]);
    // A clock decades behind and one decades ahead.
    let past = exec("clock-past", "skewed", "web", 1_000_000_000, &["date"]);
    let future = exec("clock-future", "skewed", "web", u64::MAX / 2, &["date"]);
    // Every hostile record shares one key, so one partition, with the
    // normal org's first events.
    let key = "shared";
    send(&p, topic, key, long.encode_to_vec()).await;
    send(&p, topic, key, oversize.encode_to_vec()).await;
    send(
        &p,
        topic,
        key,
        b"\x0a\xff\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    send(&p, topic, key, past.encode_to_vec()).await;
    send(&p, topic, key, future.encode_to_vec()).await;
    let mut normal = HashSet::new();
    for i in 0..40u64 {
        let id = format!("normal-{i}");
        let e = exec(&id, "acme", "api", t0 + i * 1_000_000, &["nginx", "-t"]);
        let k = if i < 20 {
            key.to_string()
        } else {
            format!("acme/api/{i}")
        };
        send(&p, topic, &k, e.encode_to_vec()).await;
        normal.insert(id);
    }

    // Everything usable is stored, within the poison budget, exactly once.
    let got = rows(&env, 43, Duration::from_secs(90)).await;
    for id in &normal {
        assert!(
            got.contains_key(id),
            "{id} of another org was not stored: {:?}",
            got.keys()
        );
    }
    for id in ["long-names", "clock-past", "clock-future"] {
        assert!(got.contains_key(id), "{id} was not stored");
    }
    for r in got.values() {
        assert_eq!(r.n, 1, "{} stored {} times", r.event_id, r.n);
    }
    assert!(!got.contains_key("oversize"));
    // Skewed clocks: the event's own time kept, the partition time clamped
    // into the retention window around ingest.
    let now_s = (now_ns() / 1_000_000_000) as u32;
    let past_row = &got["clock-past"];
    assert_eq!(past_row.ts_ns, 1_000_000_000);
    assert!(
        past_row.ts > now_s - 30 * 86_400,
        "past ts {} not clamped",
        past_row.ts
    );
    let fut_row = &got["clock-future"];
    assert_eq!(fut_row.ts_ns, u64::MAX / 2);
    assert!(
        fut_row.ts <= now_s + 2 * 3600,
        "future ts {} not clamped",
        fut_row.ts
    );

    // What can never be used is dead-lettered with its reason.
    let dlq: StreamConsumer = env
        .kafka
        .consumer_config("e2e-dlq", &format!("{}-dlq", env.id))
        .create()
        .unwrap();
    dlq.subscribe(&[&env.kafka.topics.deadletter]).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .expect("dead letters within 30 s")
            .unwrap();
        assert!(
            m.payload().map_or(0, <[u8]>::len) <= 64 * 1024,
            "dead-letter copies are truncated"
        );
        let reason = outlier_e2e::dlq_reason(&m).expect("reason header");
        reasons.push(reason);
    }
    reasons.sort();
    assert!(
        reasons[0].contains("not an outlier.v1.Event"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("max_event_bytes"), "{reasons:?}");

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baselines_beyond_the_bound_are_unloaded_and_reload_what_they_learned() {
    let env = TestEnv::new("cardinality").await;
    let mut cfg = env.scorer_config();
    cfg.limits.max_loaded_baselines = 16;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(cfg, shutdown.clone()));
    let p: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    let topic = &env.kafka.topics.events;
    let t0 = now_ns();
    let workloads = 300u64;
    for i in 0..workloads {
        let e = exec(
            &format!("a-{i}"),
            "fleet",
            &format!("c-{i}"),
            t0 + i,
            &["nginx", "-t"],
        );
        send(&p, topic, &format!("fleet/c-{i}"), e.encode_to_vec()).await;
    }
    let first = outlier_e2e::read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(90),
        |s| s.len() >= workloads as usize,
    )
    .await;
    assert_eq!(first.len(), workloads as usize, "every workload scored");
    // Give the flush tick time to unload.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let evicted = outlier_scorer::metrics::EVICTIONS.get(EvictionBound::Total);
    assert!(
        evicted >= workloads - 16,
        "{evicted} baselines unloaded; {workloads} workloads over a bound of 16"
    );
    // The first workloads were unloaded first: the same behaviour again is
    // known (loaded back from LanceDB), not new.
    for i in 0..5u64 {
        let e = exec(
            &format!("b-{i}"),
            "fleet",
            &format!("c-{i}"),
            t0 + 1_000_000_000,
            &["nginx", "-t"],
        );
        send(&p, topic, &format!("fleet/c-{i}"), e.encode_to_vec()).await;
    }
    let all = outlier_e2e::read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(90),
        |s| s.len() >= workloads as usize + 5,
    )
    .await;
    let again: Vec<_> = all
        .iter()
        .filter(|s| {
            s.event
                .as_ref()
                .is_some_and(|e| e.event_id.starts_with("b-"))
        })
        .collect();
    assert_eq!(again.len(), 5);
    for s in again {
        assert!(
            s.anomaly_score < 0.05,
            "{} scored {} after its baseline was reloaded",
            s.event.as_ref().unwrap().event_id,
            s.anomaly_score
        );
    }
    shutdown.cancel();
    scorer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_org_over_its_bound_unloads_its_own_baselines_only() {
    let env = TestEnv::new("orgbound").await;
    let mut cfg = env.scorer_config();
    cfg.limits.max_loaded_baselines_per_org = 16;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(cfg, shutdown.clone()));
    let p: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    let topic = &env.kafka.topics.events;
    let t0 = now_ns();
    // A quiet org with 10 workloads, then an org that makes a workload per
    // container, 200 of them.
    for i in 0..10u64 {
        let e = exec(
            &format!("q-{i}"),
            "calm",
            &format!("svc-{i}"),
            t0 + i,
            &["cron"],
        );
        send(&p, topic, &format!("calm/svc-{i}"), e.encode_to_vec()).await;
    }
    let churn = 200u64;
    for i in 0..churn {
        let e = exec(
            &format!("n-{i}"),
            "churn",
            &format!("c-{i}"),
            t0 + i,
            &["nginx", "-t"],
        );
        send(&p, topic, &format!("churn/c-{i}"), e.encode_to_vec()).await;
    }
    let first = outlier_e2e::read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(90),
        |s| s.len() >= 10 + churn as usize,
    )
    .await;
    assert_eq!(first.len(), 10 + churn as usize, "every event scored");
    // A flush tick unloads down to 90% of 16 (15); the quiet org is under
    // its bound and keeps all 10: at most 200 − 15 unloads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let evicted = || outlier_scorer::metrics::EVICTIONS.get(EvictionBound::Org);
    while evicted() < churn - 16 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (churn - 16..=churn - 15).contains(&evicted()),
        "{} baselines unloaded for the org bound",
        evicted()
    );
    // Both orgs' repeated behaviour is known: the quiet one's in memory,
    // the churning one's first workloads loaded back from LanceDB.
    for i in 0..5u64 {
        let e = exec(
            &format!("q2-{i}"),
            "calm",
            &format!("svc-{i}"),
            t0 + 1_000_000_000,
            &["cron"],
        );
        send(&p, topic, &format!("calm/svc-{i}"), e.encode_to_vec()).await;
        let e = exec(
            &format!("n2-{i}"),
            "churn",
            &format!("c-{i}"),
            t0 + 1_000_000_000,
            &["nginx", "-t"],
        );
        send(&p, topic, &format!("churn/c-{i}"), e.encode_to_vec()).await;
    }
    let all = outlier_e2e::read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(90),
        |s| s.len() >= 20 + churn as usize,
    )
    .await;
    let again: Vec<_> = all
        .iter()
        .filter(|s| s.event.as_ref().is_some_and(|e| e.event_id.contains("2-")))
        .collect();
    assert_eq!(again.len(), 10);
    for s in again {
        assert!(
            s.anomaly_score < 0.05,
            "{} scored {} on behaviour its workload had shown",
            s.event.as_ref().unwrap().event_id,
            s.anomaly_score
        );
    }
    shutdown.cancel();
    scorer.await.unwrap().unwrap();
}
