//! Loss-free delivery: Kafka is stopped while the collector captures, and
//! every event captured during the outage arrives once it is back.
//!
//! The test runs a Kafka broker of its own (`scripts/stack up --kafka-only`
//! with a private state directory and ports), so stopping it does not
//! disturb the other tests. Needs root, like all live capture.
#![cfg(feature = "services")]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outlier_common::kafka::{KafkaConfig, SaslConfig};
use outlier_proto::{Event, event::Detail};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Kafka broker run by the project's stack script.
struct Broker {
    state: tempfile::TempDir,
    port: u16,
    controller: u16,
}

impl Broker {
    fn stack(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
        let out = Command::new(script)
            .args(args)
            .env("OUTLIER_STATE", self.state.path())
            .env("OUTLIER_KAFKA_PORT", self.port.to_string())
            .env("OUTLIER_KAFKA_CONTROLLER_PORT", self.controller.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/stack {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let b = Self {
            state: tempfile::tempdir().unwrap(),
            port: free_port(),
            controller: free_port(),
        };
        b.stack(&["up", "--kafka-only"]);
        b
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stack(&["down"]);
    }
}

/// Runs `n` short processes whose argv carries `tag` and an index.
fn run_marked(tag: &str, range: std::ops::Range<usize>) {
    for i in range {
        let st = Command::new("/bin/true")
            .args([tag, &i.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn marks(events: &[Event], tag: &str) -> HashSet<usize> {
    events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(Detail::Exec(x)) if x.argv.get(1).map(String::as_str) == Some(tag) => {
                x.argv.get(2)?.parse().ok()
            }
            _ => None,
        })
        .collect()
}

fn read_all(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    tag: &str,
    want: usize,
) -> Vec<Event> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = kafka
        .consumer_config("outage-test", &group)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && marks(&out, tag).len() < want {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if outlier_common::kafka::is_heartbeat(&m) {
                continue;
            }
            out.push(Event::decode(m.payload().unwrap()).unwrap());
        }
    }
    out
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn start_collector(
    dir: &Path,
    brokers: &str,
    sasl: &SaslConfig,
    topic: &str,
    http: u16,
) -> (Child, PathBuf) {
    let config = dir.join("collector.toml");
    // A short producer timeout, so the outage outlasts it and the
    // collector has to resend from its spool (not just let librdkafka
    // retry from memory).
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:{http}\"\n\
             [identity]\norg = \"outage\"\nhost = \"test-host\"\n\
             [spool]\ndir = \"{}\"\n\
             [kafka]\nbrokers = \"{brokers}\"\n\
             [kafka.topics]\nevents = \"{topic}\"\n\
             [kafka.properties]\n\"message.timeout.ms\" = \"5000\"\n{}",
            dir.join("spool").display(),
            sasl.to_toml()
        ),
    )
    .unwrap();
    let log = dir.join("collector.log");
    let child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("collector running")
    {
        assert!(Instant::now() < deadline, "collector did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, log)
}

#[test]
fn events_captured_while_kafka_is_down_arrive_after_it_restarts() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "live capture needs root"
    );
    let broker = Broker::start();
    let kafka = KafkaConfig {
        brokers: broker.brokers(),
        sasl: Some(SaslConfig::stack_admin(broker.state.path())),
        ..KafkaConfig::default()
    };
    let topic = "outage.events";
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kafka.ensure_topics(&[(topic, 3)]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let (mut collector, log) = start_collector(
        dir.path(),
        &broker.brokers(),
        kafka.sasl.as_ref().expect("set above"),
        topic,
        http,
    );
    let tag = format!("outage-{}", uuid::Uuid::now_v7().simple());

    // Before: delivered as they happen.
    run_marked(&tag, 0..100);
    let before = read_all(&kafka, topic, Duration::from_secs(30), &tag, 100);
    assert_eq!(
        marks(&before, &tag).len(),
        100,
        "delivered before the outage"
    );

    // During: Kafka is stopped; capture goes on into the spool.
    broker.stack(&["down"]);
    run_marked(&tag, 100..300);
    // Wait for the producer to give up on its in-memory retries (its
    // message timeout is 5 s; how soon it notices the broker is gone
    // varies with the machine's load).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut backlog, mut failures) = (0.0, 0.0);
    while Instant::now() < deadline && (backlog < 200.0 || failures == 0.0) {
        std::thread::sleep(Duration::from_millis(250));
        backlog = metric(http, "outlier_collector_spool_backlog_events").unwrap_or(0.0);
        failures = metric(http, "outlier_collector_publish_failures_total").unwrap_or(0.0);
    }
    assert!(
        backlog >= 200.0,
        "the spool holds the outage's events: {backlog}"
    );
    assert!(failures > 0.0, "deliveries failed while Kafka was down");
    let health = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{http}/health")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("\"healthy\":false"),
        "health reports Kafka down"
    );

    // After: Kafka is back with the same data; everything arrives.
    broker.stack(&["up", "--kafka-only"]);
    run_marked(&tag, 300..350);
    let after = read_all(&kafka, topic, Duration::from_secs(90), &tag, 350);
    let got = marks(&after, &tag);
    let missing: Vec<usize> = (0..350).filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} events: {missing:?}",
        missing.len()
    );
    // A resent event keeps its id, so duplicates collapse downstream: one
    // id per captured process.
    let mut ids: std::collections::HashMap<usize, HashSet<&str>> = Default::default();
    for e in &after {
        if let Some(Detail::Exec(x)) = &e.detail
            && x.argv.get(1) == Some(&tag)
            && let Some(i) = x.argv.get(2).and_then(|v| v.parse().ok())
        {
            ids.entry(i).or_default().insert(e.event_id.as_str());
        }
    }
    assert!(ids.values().all(|s| s.len() == 1), "one event id per event");
    // The outage's backlog is gone. (Not necessarily zero: the collector
    // keeps capturing this busy host, a batch at a time.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(http, "outlier_collector_spool_backlog_events").unwrap_or(1000.0) > 100.0 {
        assert!(Instant::now() < deadline, "spool drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(collector.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(collector.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("kafka did not acknowledge"), "{text}");
}
