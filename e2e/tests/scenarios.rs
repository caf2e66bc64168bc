//! The first seed's scenarios and baseline poisoning, through real Kafka:
//! JSON Lines → collector replay → events topic → scorer → scored topic.
#![cfg(feature = "services")]

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outlier_collector::publish::Publisher;
use outlier_collector::replay::replay;
use outlier_common::json;
use outlier_e2e::{TestEnv, fixture, read_scored};
use outlier_proto::{FeedbackLabel, ScoredEvent, Verdict};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

fn by_id(scored: &[ScoredEvent]) -> HashMap<String, ScoredEvent> {
    scored
        .iter()
        .map(|s| (s.event.as_ref().unwrap().event_id.clone(), s.clone()))
        .collect()
}

async fn replay_text(env: &TestEnv, text: &str) {
    let publisher = Publisher::new(&env.kafka, "e2e").unwrap();
    let stats = replay(text.as_bytes(), &publisher).await.unwrap();
    assert_eq!(stats.invalid, 0);
    assert_eq!(stats.failed, 0);
}

async fn send_feedback(env: &TestEnv, line: &str, label: FeedbackLabel) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let event = json::parse_line(line, now, || unreachable!()).unwrap();
    let applied = outlier_e2e::feedback_applied;
    let before = applied();
    outlier_scorer::feedback::publish(&env.kafka, event, label, "e2e", "")
        .await
        .unwrap();
    // Feedback has its own topic: wait until the scorer has applied it
    // before replaying what it should change.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while applied() <= before {
        assert!(std::time::Instant::now() < deadline, "feedback not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_scenarios_and_poisoning_through_kafka() {
    let env = TestEnv::new("scenarios").await;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));

    let org = format!("org-{}", env.id);
    let base = fixture("baseline.jsonl", &org, "r");
    let scen = fixture("scenarios.jsonl", &org, "r");
    let n_base = base.lines().count();
    let n_scen = scen.lines().count();
    replay_text(&env, &base).await;
    replay_text(&env, &scen).await;

    let scored = read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(120),
        |s| s.len() >= n_base + n_scen,
    )
    .await;
    let s = by_id(&scored);
    assert_eq!(s.len(), n_base + n_scen, "every event scored");
    let score = |id: &str| s[&format!("r-{id}")].anomaly_score;
    let verdict = |id: &str| s[&format!("r-{id}")].verdict();

    assert!(
        score("nginx-worker-restart") <= 0.1,
        "{}",
        score("nginx-worker-restart")
    );
    assert_eq!(verdict("nginx-worker-restart"), Verdict::Ok);
    assert!(
        (0.7..0.9).contains(&score("debug-shell-left-open")),
        "{}",
        score("debug-shell-left-open")
    );
    assert_eq!(verdict("debug-shell-left-open"), Verdict::Warn);
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
    assert!(
        score("curl-pipe-bash-as-root") > 0.9,
        "{}",
        score("curl-pipe-bash-as-root")
    );
    assert_eq!(verdict("curl-pipe-bash-as-root"), Verdict::Alert);
    assert!(
        !s["r-curl-pipe-bash-as-root"].learned,
        "an alert after warm-up is not learned"
    );

    // Warn and alert verdicts also went to the alerts topic.
    let alerts = read_scored(
        &env.kafka,
        &env.kafka.topics.alerts,
        Duration::from_secs(30),
        |a| {
            a.iter()
                .any(|x| x.event.as_ref().unwrap().event_id == "r-curl-pipe-bash-as-root")
        },
    )
    .await;
    assert!(alerts.iter().all(|a| a.verdict() != Verdict::Ok));
    assert!(
        alerts
            .iter()
            .any(|a| a.event.as_ref().unwrap().event_id == "r-debug-shell-left-open")
    );

    // Poisoning: the attacker repeats curl|bash; it keeps alerting.
    let curl_line = |id: &str| {
        scen.lines()
            .find(|l| l.contains("curl-pipe-bash-as-root"))
            .unwrap()
            .replace("r-curl-pipe-bash-as-root", id)
    };
    replay_text(&env, &(curl_line("again-1") + "\n")).await;
    // An operator confirms it benign (say, it is their installer): learned.
    send_feedback(&env, &curl_line("fb-1"), FeedbackLabel::Benign).await;
    replay_text(&env, &(curl_line("again-2") + "\n")).await;
    // Then changes their mind: malicious, forgotten.
    send_feedback(&env, &curl_line("fb-2"), FeedbackLabel::Malicious).await;
    replay_text(&env, &(curl_line("again-3") + "\n")).await;

    let scored = read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(60),
        |s| {
            ["again-1", "again-2", "again-3"]
                .iter()
                .all(|id| s.iter().any(|x| x.event.as_ref().unwrap().event_id == *id))
        },
    )
    .await;
    let s = by_id(&scored);
    assert!(
        !s.contains_key("fb-1") && !s.contains_key("fb-2"),
        "feedback is not scored"
    );
    assert!(
        s["again-1"].anomaly_score > 0.9,
        "repeated attack still alerts: {}",
        s["again-1"].anomaly_score
    );
    assert!(
        s["again-2"].anomaly_score < 0.05,
        "confirmed benign is learned: {}",
        s["again-2"].anomaly_score
    );
    assert!(
        s["again-3"].anomaly_score > 0.9,
        "confirmed malicious is forgotten: {}",
        s["again-3"].anomaly_score
    );

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scorers_share_the_partitions_and_baselines_survive_a_restart() {
    let env = TestEnv::new("group").await;
    let shutdown = CancellationToken::new();
    let cfg = env.scorer_config();
    let a = tokio::spawn(outlier_scorer::run(cfg.clone(), shutdown.clone()));
    let b = tokio::spawn(outlier_scorer::run(cfg.clone(), shutdown.clone()));

    // 30 workloads over the topic's 3 partitions.
    let org = format!("org-{}", env.id);
    let mut text = String::new();
    for w in 0..30 {
        text.push_str(&format!(
            r#"{{"event_id":"first-{w}","org":"{org}","workload":"w{w}","host":"h","kind":"exec","comm":"nginx","parent_comm":"nginx","argv":["nginx: worker process"]}}"#
        ));
        text.push('\n');
    }
    // Wait until the group has settled with both members.
    let admin: rdkafka::consumer::BaseConsumer = env
        .kafka
        .consumer_config("e2e-group-probe", &format!("{}-probe", env.id))
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let settled = admin
            .fetch_group_list(Some(&cfg.group_id), Duration::from_secs(5))
            .ok()
            .and_then(|l| {
                l.groups()
                    .first()
                    .map(|g| g.state() == "Stable" && g.members().len() == 2)
            })
            .unwrap_or(false);
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two scorers did not form a stable group in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    replay_text(&env, &text).await;
    let scored = read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(60),
        |s| s.len() >= 30,
    )
    .await;
    assert_eq!(by_id(&scored).len(), 30);
    assert!(
        scored.iter().all(|s| s.anomaly_score == 1.0),
        "first behaviour of each workload scores 1.0"
    );

    let probe: StreamConsumer = env
        .kafka
        .consumer_config("e2e-probe", "e2e-probe")
        .create()
        .unwrap();
    let groups = probe
        .fetch_group_list(Some(&cfg.group_id), Duration::from_secs(10))
        .unwrap();
    let group = groups
        .groups()
        .iter()
        .find(|g| g.name() == cfg.group_id)
        .expect("scorer group");
    let members_with_partitions = group
        .members()
        .iter()
        .filter(|m| m.assignment().is_some_and(|a| a.len() > 8))
        .count();
    assert_eq!(group.members().len(), 2, "two scorers in the group");
    assert_eq!(members_with_partitions, 2, "both scorers hold partitions");

    // Stop both (they persist their baselines) and start a fresh one: the
    // behaviour learned before the restart is known.
    shutdown.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let shutdown = CancellationToken::new();
    let c = tokio::spawn(outlier_scorer::run(cfg, shutdown.clone()));
    replay_text(&env, &text.replace("first-", "second-")).await;
    let scored = read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(60),
        |s| s.len() >= 60,
    )
    .await;
    let second: Vec<&ScoredEvent> = scored
        .iter()
        .filter(|s| s.event.as_ref().unwrap().event_id.starts_with("second-"))
        .collect();
    assert_eq!(second.len(), 30);
    let novel: Vec<(&str, f32)> = second
        .iter()
        .filter(|s| s.anomaly_score >= 0.05)
        .map(|s| (s.event.as_ref().unwrap().event_id.as_str(), s.anomaly_score))
        .collect();
    assert!(
        novel.is_empty(),
        "baselines rebuilt from LanceDB after restart; novel again: {novel:?}"
    );
    shutdown.cancel();
    c.await.unwrap().unwrap();
}
