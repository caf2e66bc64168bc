//! Synthetic fleets for the scorer benchmarks, built from the benign
//! command-line corpus in `data/benign_commands.jsonl` (NL2Bash, MIT): every
//! workload gets its own deterministic sample of real command lines as its
//! distinct behaviours.

#![allow(dead_code)]

use std::collections::HashMap;

use outlier_common::featurize::embed;
use outlier_proto::{Event, Exec, event::Detail};
use outlier_scorer::baseline::{Baseline, IndexParams};
use outlier_scorer::judge::workload_key;

pub fn corpus() -> Vec<Vec<String>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/benign_commands.jsonl");
    let text = std::fs::read_to_string(path).expect("data/benign_commands.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["command"]
                .as_str()
                .map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
        })
        .filter(|argv: &Vec<String>| !argv.is_empty())
        .collect()
}

pub use outlier_common::rng::Rng;

const PARENTS: [&str; 6] = ["bash", "cron", "sshd", "systemd", "runner", "python3"];

/// The `i`-th distinct behaviour of a workload: a corpus command with a
/// parent, a user and a variant argument, so a workload has as many
/// distinct behaviours as asked for.
pub fn event(
    org: &str,
    workload: &str,
    corpus: &[Vec<String>],
    rng: &mut Rng,
    variant: usize,
) -> Event {
    let mut argv = corpus[rng.below(corpus.len())].clone();
    argv.push(format!("--job=j{variant}"));
    let comm = argv[0]
        .rsplit('/')
        .next()
        .unwrap_or("sh")
        .chars()
        .take(15)
        .collect::<String>();
    Event {
        event_id: format!("{workload}-{variant}"),
        org: org.to_string(),
        workload: workload.to_string(),
        host: "h1".to_string(),
        ts_ns: 1_800_000_000_000_000_000,
        uid: if rng.below(4) == 0 { 0 } else { 1000 },
        comm,
        parent_comm: PARENTS[rng.below(PARENTS.len())].to_string(),
        detail: Some(Detail::Exec(Exec {
            argc: argv.len() as u32,
            argv,
            ..Exec::default()
        })),
        ..Event::default()
    }
}

/// `workloads` baselines of `behaviours` distinct behaviours each, and for
/// each workload the events they were built from.
pub fn fleet(
    workloads: usize,
    behaviours: usize,
    params: IndexParams,
) -> (HashMap<String, Baseline>, Vec<Vec<Event>>) {
    let corpus = corpus();
    let mut rng = Rng::new(42);
    let mut baselines = HashMap::with_capacity(workloads);
    let mut events = Vec::with_capacity(workloads);
    for w in 0..workloads {
        let name = format!("w{w}");
        let mut b = Baseline::with_params(params);
        let mut evs = Vec::with_capacity(behaviours);
        for i in 0..behaviours {
            let e = event("acme", &name, &corpus, &mut rng, i);
            b.observe(&embed(&e), e.ts_ns);
            evs.push(e);
        }
        b.take_dirty();
        baselines.insert(workload_key("acme", &name), b);
        events.push(evs);
    }
    (baselines, events)
}

/// Events new to their workload (variants past the baseline's).
pub fn novel_events(workloads: usize, behaviours: usize, n: usize) -> Vec<Event> {
    let corpus = corpus();
    let mut rng = Rng::new(7);
    (0..n)
        .map(|i| {
            let w = i % workloads;
            event("acme", &format!("w{w}"), &corpus, &mut rng, behaviours + i)
        })
        .collect()
}
