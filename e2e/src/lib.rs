//! Helpers for Outlier's end-to-end tests. The tests run against the real
//! Kafka and ClickHouse that `scripts/stack up --infra` (or `scripts/test`)
//! starts on loopback; each test isolates itself with its own topics,
//! consumer groups, ClickHouse database and LanceDB directory.

use std::time::Duration;

use outlier_common::kafka::{KafkaConfig, SaslConfig, Topics};
use outlier_indexer::IndexerConfig;
use outlier_scorer::ScorerConfig;

/// Kafka brokers of the test stack (`OUTLIER_TEST_KAFKA`, default 127.0.0.1:9092).
pub fn kafka_brokers() -> String {
    std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// ClickHouse HTTP URL of the test stack (`OUTLIER_TEST_CLICKHOUSE`).
pub fn clickhouse_url() -> String {
    std::env::var("OUTLIER_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".to_string())
}

/// One isolated slice of the shared test stack.
pub struct TestEnv {
    pub id: String,
    pub kafka: KafkaConfig,
    pub database: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// Checks the services are up (failing with what to run when they are
    /// not) and creates this test's topics.
    pub async fn new(name: &str) -> Self {
        let id = format!("{name}-{}", uuid::Uuid::now_v7().simple());
        let mut kafka = KafkaConfig {
            brokers: kafka_brokers(),
            // The stack's admin principal: tests make their own topics.
            sasl: SaslConfig::from_env(),
            ..KafkaConfig::default()
        };
        if let Err(e) = kafka.probe(Duration::from_secs(5)) {
            panic!(
                "Kafka is not reachable at {} ({e}); start the test services with `scripts/stack up --infra` or run `scripts/test`",
                kafka.brokers
            );
        }
        let ch = reqwest_ping(&clickhouse_url()).await;
        assert!(
            ch,
            "ClickHouse is not reachable at {}; start the test services with `scripts/stack up --infra` or run `scripts/test`",
            clickhouse_url()
        );
        kafka.topics = Topics {
            events: format!("{id}.events"),
            scored: format!("{id}.scored"),
            alerts: format!("{id}.alerts"),
            deadletter: format!("{id}.deadletter"),
            feedback: format!("{id}.feedback"),
            heartbeats: format!("{id}.heartbeats"),
            suppressions: format!("{id}.suppressions"),
            signatures: format!("{id}.signatures"),
            findings: format!("{id}.findings"),
        };
        let t = &kafka.topics;
        kafka
            .ensure_topics(&[
                (&t.events, 3),
                (&t.feedback, 3),
                (&t.heartbeats, 1),
                (&t.scored, 3),
                (&t.alerts, 1),
                (&t.deadletter, 1),
                (&t.suppressions, 1),
                (&t.signatures, 1),
                (&t.findings, 1),
            ])
            .await
            .expect("create test topics");
        let database = format!("outlier_test_{}", id.replace('-', "_"));
        Self {
            id,
            kafka,
            database,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn scorer_config(&self) -> ScorerConfig {
        let mut c = ScorerConfig {
            kafka: self.kafka.clone(),
            group_id: format!("{}-scorer", self.id),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            ..ScorerConfig::default()
        };
        c.baseline.uri = self.dir.path().join("baselines").display().to_string();
        c.baseline.flush_interval_ms = 200;
        c
    }

    pub fn indexer_config(&self) -> IndexerConfig {
        let mut c = IndexerConfig {
            kafka: self.kafka.clone(),
            group_id: format!("{}-indexer", self.id),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            ..IndexerConfig::default()
        };
        c.clickhouse.url = clickhouse_url();
        c.clickhouse.database = self.database.clone();
        c.batch.max_wait_ms = 200;
        c.grpc_addr = free_addr();
        c.search.uri = self.dir.path().join("search").display().to_string();
        // Plaintext on loopback; tests/auth.rs runs TLS with tokens.
        c.auth.insecure = true;
        c
    }

    /// The indexer's config with TLS (certificates made here, the CA at
    /// [`TestEnv::ca_pem`]) and the tokens file `tokens` (TOML).
    pub fn secure_indexer_config(&self, tokens: &str) -> IndexerConfig {
        let dir = self.dir.path().join("auth");
        std::fs::create_dir_all(&dir).expect("auth dir");
        tls_certificates(&dir);
        std::fs::write(dir.join("tokens.toml"), tokens).expect("tokens file");
        let mut cfg = self.indexer_config();
        cfg.auth.insecure = false;
        cfg.auth.tokens_file = dir.join("tokens.toml").display().to_string();
        cfg.tls.cert = dir.join("server.pem").display().to_string();
        cfg.tls.key = dir.join("server.key").display().to_string();
        cfg
    }

    /// The CA of [`TestEnv::secure_indexer_config`]'s certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("auth/ca.pem")).expect("the CA was made")
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(clickhouse_url())
            .with_database(&self.database)
            .with_validation(false)
    }

    /// Drops the test database (best effort).
    pub async fn cleanup(&self) {
        let admin = clickhouse::Client::default()
            .with_url(clickhouse_url())
            .with_validation(false);
        let _ = admin
            .query(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .execute()
            .await;
    }
}

pub use outlier_common::now_ns;

/// The reason header of a dead-letter record.
pub fn dlq_reason(m: &impl rdkafka::Message) -> Option<String> {
    use rdkafka::message::Headers as _;
    m.headers()?
        .iter()
        .find(|h| h.key == outlier_common::kafka::DLQ_REASON_HEADER)?
        .value
        .map(|v| String::from_utf8_lossy(v).to_string())
}

/// A loopback address with a port free right now, for a service the test
/// starts and then dials.
///
/// The port comes from below the kernel's ephemeral range (32768 and up by
/// default): a port from `127.0.0.1:0` is released before the service binds
/// it, and in that gap the services' own `:0` listeners (metrics, health)
/// could be handed the same port — a gRPC client then reached an HTTP server
/// and got 404. Ports below the range are never handed out for `:0`; a
/// counter offset by the process id keeps the tests of one binary apart.
pub fn free_addr() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + base.wrapping_add(n) % SPAN;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

async fn reqwest_ping(url: &str) -> bool {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    client.query("SELECT 1").execute().await.is_ok()
}

/// The demo/scenario fixtures (`compose/demo/*.jsonl`) with `@ORG@` and
/// `@RUN@` filled in.
pub fn fixture(file: &str, org: &str, run: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../compose/demo")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("@ORG@", org)
        .replace("@RUN@", run)
}

/// Reads `topic` from the beginning with a fresh consumer group, decoding
/// scored events, until `done` says it has seen enough or `timeout` passes.
pub async fn read_scored(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[outlier_proto::ScoredEvent]) -> bool,
) -> Vec<outlier_proto::ScoredEvent> {
    use prost::Message as _;
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka
        .consumer_config("e2e-reader", &group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                if let Some(p) = m.payload() {
                    out.push(outlier_proto::ScoredEvent::decode(p).expect("scored event"));
                }
            }
            Ok(Err(e)) => panic!("kafka: {e}"),
            Err(_) => break,
        }
    }
    out
}

/// An exec event of `org`/`workload` on host `h-1` running `argv`.
pub fn exec(
    id: &str,
    org: &str,
    workload: &str,
    ts_ns: u64,
    argv: &[&str],
) -> outlier_proto::Event {
    use outlier_proto::{Event, Exec, event::Detail};
    Event {
        event_id: id.into(),
        org: org.into(),
        workload: workload.into(),
        host: "h-1".into(),
        ts_ns,
        pid: 100,
        ppid: 1,
        comm: argv[0].into(),
        parent_comm: "systemd".into(),
        exe: format!("/usr/bin/{}", argv[0]),
        detail: Some(Detail::Exec(Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Exec::default()
        })),
        ..Event::default()
    }
}

/// `GET path` on a service's HTTP endpoint: the status and body, or `None`
/// when nothing answers within 5 s.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Feedback records the scorers of this test process have applied so far
/// (`outlier_scorer_events_total{result="feedback"}`).
pub fn feedback_applied() -> u64 {
    outlier_scorer::metrics::EVENTS.get(outlier_scorer::metrics::EventResult::Feedback)
}

/// A reader of a topic of scored events from its start that keeps its
/// position between calls.
pub struct TopicReader(rdkafka::consumer::StreamConsumer);

impl TopicReader {
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Self {
        use rdkafka::consumer::Consumer as _;
        let c: rdkafka::consumer::StreamConsumer = kafka
            .consumer_config(
                "e2e-reader",
                &format!("reader-{}", uuid::Uuid::now_v7().simple()),
            )
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        Self(c)
    }

    /// The next scored event with id `id`, or `None` after `timeout`.
    pub async fn find(&self, id: &str, timeout: Duration) -> Option<outlier_proto::ScoredEvent> {
        use prost::Message as _;
        use rdkafka::Message as _;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.0.recv())
                .await
                .ok()?;
            let m = m.expect("kafka");
            let s = outlier_proto::ScoredEvent::decode(m.payload().unwrap_or_default())
                .expect("scored event");
            if s.event.as_ref().is_some_and(|e| e.event_id == id) {
                return Some(s);
            }
        }
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`)
/// for 127.0.0.1 in `dir`, made by openssl as scripts/stack makes them.
pub fn tls_certificates(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}
