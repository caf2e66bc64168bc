//! Hostile workload cardinality against the real Kafka and LanceDB: one
//! event each from 100,000 distinct workloads of one org (a container-id
//! workload rule makes one per container) through a scorer bounded at
//! 10,000 loaded baselines. Asserts every event is scored once, the loaded
//! baselines stay near the bound while the rest are unloaded to LanceDB,
//! the baselines live in the org's shard tables (not a table each), and a
//! sample of unloaded workloads reloads what they showed. Prints the peak
//! RSS for docs/reliability.md.
//!
//! Its own test binary, so that the process's RSS and the scorer's global
//! metrics are this test's alone. Larger runs (the 1,000,000-workload
//! figure in docs/reliability.md):
//!
//!     OUTLIER_CARDINALITY=1000000 OUTLIER_MAX_LOADED=50000 cargo test --release \
//!       -p outlier-e2e --features services --test cardinality -- --nocapture
#![cfg(feature = "services")]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outlier_e2e::{TestEnv, exec, now_ns};
use outlier_scorer::metrics::{EVICTIONS, EvictionBound, WORKLOADS};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// The scorer's allocator (its binary's), so that the RSS printed is what
/// the scorer would take.
#[global_allocator]
static ALLOC: outlier_common::alloc::Jemalloc = outlier_common::alloc::Jemalloc;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's memory in MB from /proc/self/status (`VmRSS`, `VmHWM`).
fn mem_mb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_workloads_stay_within_the_loaded_bound() {
    let n: u64 = env_or("OUTLIER_CARDINALITY", 100_000);
    let bound: usize = env_or("OUTLIER_MAX_LOADED", 10_000);
    let env = TestEnv::new("rss").await;
    let mut cfg = env.scorer_config();
    cfg.limits.max_loaded_baselines = bound;
    cfg.limits.max_loaded_baselines_per_org = bound;
    let baselines = cfg.baseline.uri.clone();
    let before = mem_mb("VmRSS");
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(cfg, shutdown.clone()));

    // The most baselines held in memory at once, sampled from the
    // scorer's gauge (set after every load and every unload round).
    let most_loaded = Arc::new(AtomicI64::new(0));
    let sampler = {
        let most_loaded = most_loaded.clone();
        let done = shutdown.clone();
        tokio::spawn(async move {
            while !done.is_cancelled() {
                most_loaded.fetch_max(WORKLOADS.get(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Scored events are counted (each event once: a bit per event), not
    // kept, so what grows with the workload count is the scorer's.
    let scored = Arc::new(AtomicU64::new(0));
    let reader = {
        let scored = scored.clone();
        let consumer: StreamConsumer = env
            .kafka
            .consumer_config("e2e-reader", &format!("rss-{}", now_ns()))
            .create()
            .unwrap();
        consumer.subscribe(&[&env.kafka.topics.scored]).unwrap();
        tokio::spawn(async move {
            let mut seen = vec![0u64; n.div_ceil(64) as usize];
            while scored.load(Ordering::Relaxed) < n {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                let Some(i) = m
                    .payload()
                    .and_then(|p| outlier_proto::ScoredEvent::decode(p).ok())
                    .and_then(|s| s.event?.event_id.strip_prefix("a-")?.parse::<u64>().ok())
                    .filter(|&i| i < n)
                else {
                    continue;
                };
                let (w, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                if seen[w] & bit == 0 {
                    seen[w] |= bit;
                    scored.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // At most 20,000 events in flight.
    let p: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    let topic = &env.kafka.topics.events;
    let t0 = now_ns();
    let started = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..n {
        while i.saturating_sub(scored.load(Ordering::Relaxed)) > 20_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            println!(
                "{:.0} s: produced {i}, scored {}, loaded {}, RSS {} MB, peak {} MB",
                started.elapsed().as_secs_f64(),
                scored.load(Ordering::Relaxed),
                WORKLOADS.get(),
                mem_mb("VmRSS"),
                mem_mb("VmHWM")
            );
        }
        let e = exec(
            &format!("a-{i}"),
            "fleet",
            &format!("container-{i:08x}"),
            t0 + i,
            &["nginx", "-t"],
        );
        let payload = e.encode_to_vec();
        let key = format!("fleet/{i}");
        loop {
            match p.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    tokio::time::timeout(Duration::from_secs(3600), reader)
        .await
        .expect("every event scored within the hour")
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    // Stopping flushes what is still loaded: the shards then hold every
    // workload.
    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    sampler.await.unwrap();
    let tables = std::fs::read_dir(&baselines)
        .map(|d| d.count())
        .unwrap_or(0);
    let evictions = EVICTIONS.get(EvictionBound::Total) + EVICTIONS.get(EvictionBound::Org);
    let most_loaded = most_loaded.load(Ordering::Relaxed) as u64;
    println!(
        "workloads {n}, max_loaded_baselines {bound}: scored {} in {secs:.0} s ({:.0}/s), \
         evictions {evictions}, most loaded at once {most_loaded}, \
         RSS before the scorer {before} MB, peak {} MB, {tables} LanceDB tables",
        scored.load(Ordering::Relaxed),
        n as f64 / secs,
        mem_mb("VmHWM"),
    );
    assert_eq!(scored.load(Ordering::Relaxed), n, "every event scored");
    // Unloading runs on the flush tick (200 ms here) down to 90% of the
    // bound, so between two ticks the batches of a few hundred milliseconds
    // may load past it; an unbounded scorer would hold all n.
    let slack = bound as u64 / 2;
    assert!(
        most_loaded <= bound as u64 + slack,
        "{most_loaded} baselines loaded at once over a bound of {bound}"
    );
    assert!(
        most_loaded as usize >= bound.min(n as usize) * 9 / 10,
        "the bound was reached ({most_loaded} loaded at most)"
    );
    // Every workload was unloaded or is still among the loaded.
    assert!(
        evictions + most_loaded >= n,
        "{evictions} baselines unloaded: {n} workloads over a bound of {bound}"
    );
    assert!(
        tables <= outlier_scorer::store::SHARDS as usize,
        "{tables} tables for one org"
    );
    // Every workload's behaviour is stored: a sample, mostly of unloaded
    // workloads, reloads.
    let store = outlier_scorer::store::Store::open(&baselines)
        .await
        .unwrap();
    for i in (0..n).step_by((n / 50).max(1) as usize) {
        let b = store
            .load(
                "fleet",
                &format!("container-{i:08x}"),
                0,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(b.len(), 1, "workload {i}'s behaviour reloads");
    }
    env.cleanup().await;
}
