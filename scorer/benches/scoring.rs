//! Scorer throughput, in-process (criterion): the whole per-event hot path
//! (`Judge::score` without the classifier: embed, kNN against the workload's baseline, verdict,
//! learn) for repeated behaviour (the steady state of a fleet) and for
//! behaviour new to its workload, over two fleet shapes.
//!
//!     cargo bench -p outlier-scorer --bench scoring

mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outlier_scorer::baseline::IndexParams;
use outlier_scorer::config::ScoringConfig;
use outlier_scorer::judge::Judge;

fn bench(c: &mut Criterion) {
    for (name, workloads, behaviours) in [("1000x1000", 1000, 1000), ("1x100000", 1, 100_000)] {
        let (baselines, events) = common::fleet(workloads, behaviours, IndexParams::default());
        let mut judge = Judge::new(ScoringConfig::default(), 0, None).with_baselines(baselines);
        let mut g = c.benchmark_group(format!("score_event/{name}"));
        g.throughput(Throughput::Elements(1));
        // Repeated behaviour: an event seen before in its workload.
        let mut rng = common::Rng::new(3);
        g.bench_function("repeat", |b| {
            b.iter_batched(
                || events[rng.below(workloads)][rng.below(behaviours)].clone(),
                |e| judge.score(e),
                BatchSize::SmallInput,
            )
        });
        // New behaviour: alerts are not learned after warm-up (warm-up 0
        // here), so the baselines stay the same size while measuring.
        let novel = common::novel_events(workloads, behaviours, 20_000);
        let mut i = 0;
        g.bench_function("novel", |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % novel.len();
                    novel[i].clone()
                },
                |e| judge.score(e),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
