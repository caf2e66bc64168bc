//! The Kafka trust boundary, against the stack's real broker (SASL/SCRAM
//! with the standard authorizer, principals and ACLs made by
//! `scripts/stack`): a collector's credentials write its own org's events
//! and nothing else; an event naming another org on an org's topic never
//! reaches that org's baseline; operators' feedback is applied and audited
//! in ClickHouse with who, when and why.
#![cfg(feature = "services")]

use std::process::Command;
use std::time::Duration;

use outlier_common::kafka::{KafkaConfig, SaslConfig};
use outlier_e2e::{TestEnv, dlq_reason, now_ns, read_scored};
use outlier_proto::{Event, FeedbackLabel};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The Kafka settings of one of the stack's principals.
fn as_principal(env: &TestEnv, name: &str) -> KafkaConfig {
    let sasl = SaslConfig::stack_principal(&SaslConfig::local_stack_state(), name);
    assert!(
        std::path::Path::new(&sasl.password_file).is_file(),
        "{} missing: run scripts/stack up --infra",
        sasl.password_file
    );
    let mut k = env.kafka.clone();
    k.sasl = Some(sasl);
    k
}

/// `scripts/stack org add ORG` for this test's events topic.
fn org_add(env: &TestEnv, org: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
    let out = Command::new(script)
        .args([
            "org",
            "add",
            org,
            "--events-topic",
            &env.kafka.topics.events,
        ])
        .args(["--partitions", "3"])
        .output()
        .expect("run scripts/stack");
    assert!(
        out.status.success(),
        "scripts/stack org add {org} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exec(id: &str, org: &str, argv: &[&str]) -> Event {
    outlier_e2e::exec(id, org, "web", now_ns(), argv)
}

async fn produce(kafka: &KafkaConfig, topic: &str, e: &Event) -> Result<(), KafkaError> {
    let p: FutureProducer = kafka
        .producer_config("e2e-trust")
        .create()
        .expect("producer");
    p.send(
        FutureRecord::to(topic)
            .key(&e.partition_key())
            .payload(&e.encode_to_vec()),
        Duration::from_secs(20),
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e)
}

fn denied(r: &Result<(), KafkaError>) -> bool {
    matches!(
        r.as_ref().err().and_then(|e| e.rdkafka_error_code()),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_writes_only_its_own_org_and_nothing_else() {
    let env = TestEnv::new("trust").await;
    let tag = &env.id[env.id.len() - 8..];
    let (acme, globex) = (format!("acme{tag}"), format!("globex{tag}"));
    org_add(&env, &acme);
    org_add(&env, &globex);
    let acme_topic = env.kafka.topics.events_for_org(&acme).unwrap();
    let globex_topic = env.kafka.topics.events_for_org(&globex).unwrap();
    let collector = as_principal(&env, &format!("collector-{acme}"));

    // The broker refuses what the principal has no right to, with an
    // authorization error (not a timeout): the other org's topic, the
    // shared events topic, the feedback topic.
    for topic in [
        &globex_topic,
        &env.kafka.topics.events,
        &env.kafka.topics.feedback,
    ] {
        let r = produce(&collector, topic, &exec("x", &acme, &["id"])).await;
        assert!(denied(&r), "collector-{acme} wrote {topic}: {r:?}");
    }
    // Its own topic takes its events, and also a payload naming globex...
    produce(&collector, &acme_topic, &exec("mine", &acme, &["id"]))
        .await
        .expect("an org's collector writes its own topic");
    produce(&collector, &acme_topic, &exec("forged", &globex, &["id"]))
        .await
        .expect("the broker cannot read payloads");

    // ...which the scorer dead-letters: it never enters globex's baseline.
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let reasons = dead_letters(&env.kafka, &env.kafka.topics.deadletter, 1).await;
    assert_eq!(
        reasons.len(),
        1,
        "the forged event is dead-lettered: {reasons:?}"
    );
    assert!(
        reasons[0].contains(&format!("`{globex}`")) && reasons[0].contains(&acme),
        "{reasons:?}"
    );
    // Both records were read; give a wrongly scored copy time to show.
    let scored = read_scored(
        &env.kafka,
        &env.kafka.topics.scored,
        Duration::from_secs(15),
        |s| s.len() >= 2,
    )
    .await;
    let ids: Vec<_> = scored
        .iter()
        .map(|s| s.event.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(ids, ["mine"], "only acme's own event is scored");
    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    let store = outlier_scorer::store::Store::open(&env.scorer_config().baseline.uri)
        .await
        .unwrap();
    let loaded = store
        .load(&globex, "web", 0, Default::default())
        .await
        .unwrap();
    assert_eq!(loaded.len(), 0, "globex's baseline learned a forged event");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collectors_cannot_read_scored_events_nor_write_feedback_on_the_stack() {
    let env = TestEnv::new("trust-stack").await;
    let collector = as_principal(&env, "collector");
    let stack = outlier_common::kafka::Topics::default();
    let r = produce(&collector, &stack.feedback, &exec("x", "local", &["id"])).await;
    assert!(denied(&r), "the collector principal wrote feedback: {r:?}");

    // Reading the scored topic: refused, however it is asked.
    let mut c = collector.consumer_config("e2e-trust", "outlier-scorer");
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&stack.scored, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let err = loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Err(e)) => break e,
            Some(Ok(m)) => panic!("the collector principal read {}", m.topic()),
            None => assert!(
                std::time::Instant::now() < deadline,
                "no authorization error within 20 s"
            ),
        }
    };
    assert!(
        matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
            )
        ),
        "{err:?}"
    );
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct AuditRow {
    actor: String,
    label: String,
    note: String,
    event_id: String,
    what: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_is_applied_by_the_scorer_and_audited_in_clickhouse() {
    let env = TestEnv::new("audit").await;
    let shutdown = CancellationToken::new();
    let indexer = tokio::spawn(outlier_indexer::run(env.indexer_config(), shutdown.clone()));
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let e = exec("fb-1", &org, &["pg_dump", "-Fc", "shop"]);
    let before = outlier_e2e::feedback_applied();
    outlier_scorer::feedback::publish(
        &env.kafka,
        e,
        FeedbackLabel::Benign,
        "alice",
        "nightly backup",
    )
    .await
    .expect("feedback published");

    let ch = env.clickhouse();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows: Vec<AuditRow> = ch
            .query(
                "SELECT actor, label, note, event_id, what FROM feedback_audit FINAL WHERE org = ?",
            )
            .bind(&org)
            .fetch_all()
            .await
            .unwrap_or_default();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (
            r.actor.as_str(),
            r.label.as_str(),
            r.note.as_str(),
            r.event_id.as_str()
        ),
        ("alice", "benign", "nightly backup", "fb-1")
    );
    assert_eq!(r.what, "pg_dump -Fc shop");
    // The scorer applied it too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while outlier_e2e::feedback_applied() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feedback not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}

/// The reasons of the first `n` dead letters of `topic`.
async fn dead_letters(kafka: &KafkaConfig, topic: &str, n: usize) -> Vec<String> {
    let consumer: StreamConsumer = kafka
        .consumer_config("e2e-dlq", &format!("dlq-{}", uuid::Uuid::now_v7().simple()))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(dlq_reason(&m).unwrap_or_default()),
            Ok(Err(e)) => panic!("kafka: {e}"),
            Err(_) => break,
        }
    }
    out
}
