//! Horizontal scaling: the same stream scored by one scorer process, then by
//! two processes in one consumer group sharing the events topic's
//! partitions, through the real Kafka of `scripts/stack up --infra`
//! (`OUTLIER_TEST_KAFKA`, default 127.0.0.1:9092). Prints a Markdown table.
//!
//!     cargo bench --workspace --bench scaleout
//!
//! Scorer process i is pinned to core i (`taskset`), so one process has one
//! core and two have two; Kafka runs unpinned on the same machine.
//!
//! Each run gets fresh scored/alerts topics, consumer group and baseline
//! directory, so both runs do the same work from the same empty state. The
//! rate is taken between 10% and 90% of the events scored (process start-up
//! and the group's first rebalance excluded); the wall time from spawning
//! the processes to the last event scored is printed too.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outlier_common::kafka::KafkaConfig;
use outlier_scorer::judge::workload_key;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const PARTITIONS: i32 = 12;
const WORKLOADS: usize = 600;
const BEHAVIOURS: usize = 250;
/// Times each behaviour recurs in the stream (the first is new behaviour).
const REPEATS: usize = 4;

fn brokers() -> String {
    std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Sum of the high watermarks of `topic`: records written to it.
fn written(consumer: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| high)
                .unwrap_or(0)
        })
        .sum()
}

struct Run {
    wall: Duration,
    steady_rate: f64,
}

fn run(processes: usize, run_id: &str, kafka: &KafkaConfig, total: i64) -> Run {
    let scored = format!("{run_id}.scored");
    let alerts = format!("{run_id}.alerts");
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(kafka.ensure_topics(&[(&scored, PARTITIONS), (&alerts, 1)]))
        .expect("create topics");
    let watcher: BaseConsumer = kafka
        .consumer_config("scaleout-watch", &format!("{run_id}-watch"))
        .create()
        .expect("consumer");
    let start = Instant::now();
    let mut children: Vec<Child> = (0..processes)
        .map(|i| {
            // Process i runs on core i only: n processes get n cores (Kafka
            // shares them all), so the comparison is per scorer core.
            Command::new("taskset")
                .arg("-c")
                .arg(i.to_string())
                .arg(env!("CARGO_BIN_EXE_scorer"))
                .env("OUTLIER_SCORER__KAFKA__BROKERS", &kafka.brokers)
                .env(
                    "OUTLIER_SCORER__KAFKA__TOPICS__EVENTS",
                    &kafka.topics.events,
                )
                .env("OUTLIER_SCORER__KAFKA__TOPICS__SCORED", &scored)
                .env("OUTLIER_SCORER__KAFKA__TOPICS__ALERTS", &alerts)
                .env(
                    "OUTLIER_SCORER__KAFKA__TOPICS__DEADLETTER",
                    &kafka.topics.deadletter,
                )
                .env("OUTLIER_SCORER__GROUP_ID", format!("{run_id}-scorers"))
                .env("OUTLIER_SCORER__HTTP_ADDR", "127.0.0.1:0")
                .env("OUTLIER_SCORER__BASELINE__URI", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the scorer")
        })
        .collect();
    let (mut t10, mut t90) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(900);
    let wall = loop {
        let n = written(&watcher, &scored);
        let now = Instant::now();
        if t10.is_none() && n * 10 >= total {
            t10 = Some((now, n));
        }
        if t90.is_none() && n * 10 >= total * 9 {
            t90 = Some((now, n));
        }
        if n >= total {
            break start.elapsed();
        }
        assert!(
            now < deadline,
            "only {n} of {total} scored after 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for c in &mut children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for c in &mut children {
        let _ = c.wait();
    }
    let ((a, na), (b, nb)) = (t10.expect("10%"), t90.expect("90%"));
    Run {
        wall,
        steady_rate: (nb - na) as f64 / (b - a).as_secs_f64(),
    }
}

fn main() {
    let id = format!(
        "scaleout-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    );
    let mut kafka = KafkaConfig {
        brokers: brokers(),
        sasl: outlier_common::kafka::SaslConfig::from_env(),
        ..KafkaConfig::default()
    };
    if let Err(e) = kafka.probe(Duration::from_secs(5)) {
        panic!(
            "Kafka is not reachable at {} ({e}); start it with `scripts/stack up --infra`",
            kafka.brokers
        );
    }
    kafka.topics.events = format!("{id}.events");
    kafka.topics.deadletter = format!("{id}.deadletter");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(kafka.ensure_topics(&[
        (&kafka.topics.events, PARTITIONS),
        (&kafka.topics.deadletter, 1),
    ]))
    .expect("create topics");

    // The stream: every workload's behaviours, each recurring REPEATS
    // times, interleaved across workloads as a fleet's stream is.
    let (_, fleet) = common::fleet(WORKLOADS, BEHAVIOURS, Default::default());
    let producer: FutureProducer = kafka
        .producer_config("scaleout-load")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let total = (WORKLOADS * BEHAVIOURS * REPEATS) as i64;
    rt.block_on(async {
        let mut pending = Vec::new();
        let mut ts = 1_800_000_000_000_000_000u64;
        for r in 0..REPEATS {
            for b in 0..BEHAVIOURS {
                for w in &fleet {
                    let mut e = w[b].clone();
                    ts += 1000;
                    e.ts_ns = ts;
                    e.event_id = format!("{}-r{r}", e.event_id);
                    // Each workload runs on four hosts.
                    e.host = format!("{}-h{}", e.workload, b % 4);
                    let key = workload_key(&e.org, &e.workload);
                    let payload = e.encode_to_vec();
                    loop {
                        match producer.send_result(
                            FutureRecord::to(&kafka.topics.events)
                                .key(key.as_bytes())
                                .payload(&payload),
                        ) {
                            Ok(f) => {
                                pending.push(f);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                }
                if pending.len() > 50_000 {
                    for f in pending.drain(..) {
                        f.await.expect("delivered").expect("acknowledged");
                    }
                }
            }
        }
        for f in pending {
            f.await.expect("delivered").expect("acknowledged");
        }
    });
    drop(rt);

    let one = run(1, &format!("{id}-one"), &kafka, total);
    let two = run(2, &format!("{id}-two"), &kafka, total);
    println!(
        "{total} events ({WORKLOADS} workloads × {BEHAVIOURS} behaviours × {REPEATS}), {PARTITIONS} partitions"
    );
    println!();
    println!(
        "| scorer processes (one core each) | events/s (10%→90% scored) | wall time to all scored |"
    );
    println!("|---|---|---|");
    for (n, r) in [(1, &one), (2, &two)] {
        println!(
            "| {n} | {:.0} | {:.1} s |",
            r.steady_rate,
            r.wall.as_secs_f64()
        );
    }
    println!();
    println!(
        "Two processes: {:.2}× the events/s of one ({:.2}× by wall time).",
        two.steady_rate / one.steady_rate,
        one.wall.as_secs_f64() / two.wall.as_secs_f64()
    );
}
