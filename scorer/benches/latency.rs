//! Per-event latency percentiles of the scorer's hot path, and the first
//! seed's design (a LanceDB search and a LanceDB add for every event) in the
//! same run, for the ratio. Prints a Markdown table.
//!
//!     cargo bench --workspace --bench latency
//!
//! `OUTLIER_BENCH_ONLY_FIRST=1` stops after the first fleet (1,000 × 1,000),
//! for profiling.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::types::Float32Type;
use arrow_array::{FixedSizeListArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use lancedb::DistanceType;
use lancedb::query::{ExecutableQuery, QueryBase};
use outlier_common::featurize::{DIM, embed};
use outlier_scorer::baseline::IndexParams;
use outlier_scorer::config::ScoringConfig;
use outlier_scorer::judge::Judge;

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    Stats {
        mean,
        p50: d[d.len() / 2],
        p99: d[d.len() * 99 / 100],
    }
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.0} |",
        s.mean.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        1.0 / s.mean.as_secs_f64()
    );
}

fn outlier_case(
    name: &str,
    workloads: usize,
    behaviours: usize,
    n: usize,
    classifier: bool,
) -> (Stats, Stats) {
    let scoring = ScoringConfig::default();
    let (baselines, events) = common::fleet(workloads, behaviours, IndexParams::default());
    let classifier = classifier.then(|| {
        outlier_scorer::threat::classifier(&scoring.classifier)
            .expect("built-in model")
            .expect("enabled by default")
    });
    let with = if classifier.is_some() {
        " + classifier"
    } else {
        ""
    };
    let mut judge = Judge::new(scoring, 0, classifier).with_baselines(baselines);
    let mut rng = common::Rng::new(3);
    let repeats: Vec<_> = (0..n)
        .map(|_| events[rng.below(workloads)][rng.below(behaviours)].clone())
        .collect();
    let novel = common::novel_events(workloads, behaviours, n);
    let mut time = |evs: Vec<outlier_proto::Event>| {
        let mut d = Vec::with_capacity(evs.len());
        for e in evs {
            let t = Instant::now();
            std::hint::black_box(judge.score(e));
            d.push(t.elapsed());
        }
        stats(d)
    };
    let r = time(repeats);
    let v = time(novel);
    row(&format!("Outlier{with}, {name}, repeated behaviour"), &r);
    row(&format!("Outlier{with}, {name}, new behaviour"), &v);
    (r, v)
}

/// The first seed's `scoreAndLearn`: embed, LanceDB k=10 search, LanceDB
/// add of one row, for every event, on one workload's table.
async fn seed_case(behaviours: usize, n: usize) -> Stats {
    let dir = tempfile::tempdir().unwrap();
    let db = lancedb::connect(dir.path().to_str().unwrap())
        .execute()
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                DIM as i32,
            ),
            false,
        ),
        Field::new("ts", DataType::Int64, false),
    ]));
    let batch = |vs: &[[f32; DIM]]| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                        vs.iter()
                            .map(|v| Some(v.iter().copied().map(Some).collect::<Vec<_>>())),
                        DIM as i32,
                    ),
                ),
                Arc::new(Int64Array::from_iter_values(vs.iter().map(|_| 0))),
            ],
        )
        .unwrap()
    };
    let (_, events) = common::fleet(1, behaviours, IndexParams::default());
    let vectors: Vec<[f32; DIM]> = events[0].iter().map(embed).collect();
    let table = db
        .create_table("w", batch(&vectors))
        .execute()
        .await
        .unwrap();
    let novel = common::novel_events(1, behaviours, n);
    let mut d = Vec::with_capacity(n);
    for e in novel {
        let t = Instant::now();
        let v = embed(&e);
        let results: Vec<RecordBatch> = table
            .query()
            .nearest_to(v.as_slice())
            .unwrap()
            .distance_type(DistanceType::Cosine)
            .limit(10)
            .execute()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        std::hint::black_box(results);
        table.add(batch(&[v])).execute().await.unwrap();
        d.push(t.elapsed());
    }
    stats(d)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    println!("| case | mean µs | p50 µs | p99 µs | events/s (1 core) |");
    println!("|---|---|---|---|---|");
    let (_, novel_1k) = outlier_case(
        "1,000 workloads × 1,000 behaviours",
        1000,
        1000,
        20_000,
        false,
    );
    if std::env::var_os("OUTLIER_BENCH_ONLY_FIRST").is_some() {
        return;
    }
    outlier_case("1 workload × 100,000 behaviours", 1, 100_000, 20_000, false);
    outlier_case(
        "1,000 workloads × 1,000 behaviours",
        1000,
        1000,
        20_000,
        true,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = rt.block_on(seed_case(1000, 300));
    row(
        "first seed's design (LanceDB search + add per event), 1 workload × 1,000",
        &seed,
    );
    println!();
    println!(
        "Outlier (new behaviour, 1,000 × 1,000) is {:.0}× faster than the seed's design per event (mean), {:.0}× at p99.",
        seed.mean.as_secs_f64() / novel_1k.mean.as_secs_f64(),
        seed.p99.as_secs_f64() / novel_1k.p99.as_secs_f64()
    );
}
