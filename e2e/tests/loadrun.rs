//! A short load run through the whole pipeline: the harness measures what
//! it should, and nothing is lost.
#![cfg(feature = "services")]

use std::sync::Arc;
use std::time::Duration;

use outlier_e2e::TestEnv;
use outlier_loadtest::run::{RunConfig, run};
use outlier_loadtest::sim::{Corpus, SimConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_load_run_loses_nothing() {
    let env = TestEnv::new("loadrun").await;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(env.indexer_config(), shutdown.clone()));
    // Rows are counted once the indexer has made its schema.
    let ch = env.clickhouse();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = ch
            .query(
                "SELECT count() FROM system.tables WHERE database = ? AND name = 'security_events'",
            )
            .bind(&env.database)
            .fetch_one()
            .await
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the indexer made no schema in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let corpus = Arc::new(
        Corpus::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")).unwrap(),
    );
    let cfg = RunConfig {
        kafka: env.kafka.clone(),
        clickhouse_url: outlier_e2e::clickhouse_url(),
        clickhouse_db: env.database.clone(),
        rate: 300,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        sim: SimConfig {
            org: format!("lt-{}", env.id),
            id_prefix: "lt".into(),
            attack_rate: 0.05,
            ..SimConfig::default()
        },
        drain: Duration::from_secs(90),
        progress: false,
    };
    let r = run(cfg, corpus).await.unwrap();
    assert!(r.produced >= 1000, "{}", r.produced);
    assert_eq!(r.scored_unique, r.produced, "every event scored");
    assert_eq!(r.rows_in_clickhouse, r.produced, "every event stored");
    assert_eq!(r.scored_latency.len() as u64, r.produced);
    assert!(!r.queryable_latency.is_empty());
    let (benign, malicious, _) = outlier_loadtest::report::detection(&r);
    assert!(benign.events > 0 && malicious.events > 0);
    // Every flagged event of the run was grouped into an incident, each
    // counted once, and there are fewer incidents than flagged events
    // (an attack's events group).
    let flagged = r.flagged;
    assert!(flagged > 0);
    assert_eq!(r.incidents.events, flagged, "{:?}", r.incidents);
    assert!(
        r.incidents.incidents > 0 && r.incidents.incidents < flagged,
        "{:?}",
        r.incidents
    );
    let dir = tempfile::tempdir().unwrap();
    let md = outlier_loadtest::report::write(&r, dir.path(), "test", "test").unwrap();
    assert!(md.contains("sustained rate"));
    assert!(md.contains("incidents per host-hour"));
    assert!(dir.path().join("latency.png").metadata().unwrap().len() > 1000);

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}
