//! The first seed's acceptance scenarios, scored in-process (the same path
//! the pipeline runs; `e2e/tests/scenarios.rs` runs them through Kafka).

use std::collections::HashMap;

use outlier_common::json;
use outlier_proto::{Event, ScoredEvent, Verdict};
use outlier_scorer::config::ScoringConfig;
use outlier_scorer::judge::Judge;

/// The demo's events, one second apart; `start` continues the clock.
fn load(file: &str, start: u64) -> Vec<Event> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../compose/demo")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let mut t = start;
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
    let classifier = outlier_scorer::threat::classifier(&scoring.classifier).unwrap();
    assert!(classifier.is_some(), "the classifier is on by default");
    let mut judge = Judge::new(scoring, 200, classifier);
    let mut clock = 1_800_000_000_000_000_000u64;
    for e in load("baseline.jsonl", clock) {
        clock = e.ts_ns;
        judge.score(e);
    }
    load("scenarios.jsonl", clock)
        .into_iter()
        .map(|e| {
            let s = judge.score(e);
            let id = s
                .event
                .as_ref()
                .unwrap()
                .event_id
                .trim_start_matches("t-")
                .to_string();
            println!(
                "{id:28} {:.3} {:?} {} {} {:.3} {}",
                s.anomaly_score,
                s.verdict(),
                s.threat_category,
                s.technique,
                s.confidence,
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

    // The classifier: routine is benign; the reverse shell from the web
    // app is called malicious on its own, with a technique and sentences.
    assert_eq!(s["nginx-worker-restart"].threat_category, "benign");
    let rs = &s["reverse-shell-from-web-app"];
    assert!(
        ["command-and-control", "execution"].contains(&rs.threat_category.as_str()),
        "{}",
        rs.threat_category
    );
    assert!(rs.technique.starts_with('T'), "{}", rs.technique);
    assert!(rs.confidence > 0.3 && rs.confidence <= 1.0);
    assert!(!rs.contributions.is_empty());
    assert!(
        rs.contributions
            .iter()
            .all(|c| c.shap > 0.0 && !c.sentence.is_empty())
    );
    assert!(rs.explanation.contains(&rs.contributions[0].sentence));
}
