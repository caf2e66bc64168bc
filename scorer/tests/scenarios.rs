//! The first seed's acceptance scenarios, scored in-process (the same path
//! the pipeline runs; `e2e/tests/scenarios.rs` runs them through Kafka).

use std::collections::HashMap;

use outlier_common::json;
use outlier_proto::{Event, ScoredEvent, Verdict};
use outlier_scorer::baseline::Baseline;
use outlier_scorer::config::ScoringConfig;
use outlier_scorer::pipeline::score_event;

fn load(file: &str) -> Vec<Event> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../compose/demo")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let mut t = 1_800_000_000_000_000_000u64;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            t += 1_000_000_000;
            let l = l.replace("@ORG@", "acme").replace("@RUN@", "t");
            json::parse_line(&l, t, || unreachable!()).unwrap()
        })
        .collect()
}

fn run() -> HashMap<String, ScoredEvent> {
    let scoring = ScoringConfig::default();
    let mut baselines: HashMap<String, Baseline> = HashMap::new();
    for e in load("baseline.jsonl") {
        score_event(&mut baselines, e, &scoring, 200);
    }
    load("scenarios.jsonl")
        .into_iter()
        .map(|e| {
            let s = score_event(&mut baselines, e, &scoring, 200);
            let id = s
                .event
                .as_ref()
                .unwrap()
                .event_id
                .trim_start_matches("t-")
                .to_string();
            println!(
                "{id:28} {:.3} {:?}  {}",
                s.anomaly_score,
                s.verdict(),
                s.explanation
            );
            (id, s)
        })
        .collect()
}

#[test]
fn the_seed_scenarios_score_as_the_seed_reports() {
    let s = run();
    let score = |id: &str| s[id].anomaly_score;
    // "Your usual nginx worker restarts → score 0.02, ignored"
    assert!(
        score("nginx-worker-restart") <= 0.1,
        "{}",
        score("nginx-worker-restart")
    );
    assert_eq!(s["nginx-worker-restart"].verdict(), Verdict::Ok);
    // "A developer accidentally leaves a debug shell running → 0.85, warn"
    assert!(
        (0.7..0.9).contains(&score("debug-shell-left-open")),
        "{}",
        score("debug-shell-left-open")
    );
    assert_eq!(s["debug-shell-left-open"].verdict(), Verdict::Warn);
    // "A new build script … 0.72 on first run, drops to 0.1 after the second"
    assert!(
        (0.55..0.85).contains(&score("new-ci-script-first-run")),
        "{}",
        score("new-ci-script-first-run")
    );
    assert!(
        score("new-ci-script-second-run") <= 0.15,
        "{}",
        score("new-ci-script-second-run")
    );
    // "Someone runs curl | bash as root → 0.94, flagged immediately"
    assert!(
        score("curl-pipe-bash-as-root") > 0.9,
        "{}",
        score("curl-pipe-bash-as-root")
    );
    assert_eq!(s["curl-pipe-bash-as-root"].verdict(), Verdict::Alert);
}
