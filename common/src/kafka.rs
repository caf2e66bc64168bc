//! Kafka client set-up shared by the binaries: topic names, producer and
//! consumer settings that make delivery at-least-once, and a start-up wait
//! that retries with backoff when the broker is not there yet.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::telemetry::Check;

/// Connection settings and topic names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    pub topics: Topics,
    /// Extra librdkafka properties (they win over everything else).
    pub properties: BTreeMap<String, String>,
    /// SASL authentication to the brokers (the stack's broker requires it).
    pub sasl: Option<SaslConfig>,
    /// Collectors publish to one events topic per org, `{events}.{org}`,
    /// which only that org's collectors may write (docs/security.md);
    /// scorers always read the shared topic and every org topic.
    pub org_topics: bool,
}

/// SASL credentials of one Kafka principal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN.
    #[serde(default = "default_mechanism")]
    pub mechanism: String,
    pub username: String,
    /// The password itself; prefer `password_file`.
    #[serde(default)]
    pub password: String,
    /// File holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: String,
    /// CA certificate (PEM) of the brokers' TLS listener: set, the
    /// connection is SASL_SSL; unset, SASL_PLAINTEXT (loopback only).
    #[serde(default)]
    pub ca: String,
}

fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn default_mechanism() -> String {
    "SCRAM-SHA-512".to_string()
}

impl SaslConfig {
    /// Credentials of tools, tests and benchmarks: `OUTLIER_KAFKA_USER`
    /// with `OUTLIER_KAFKA_PASSWORD_FILE` (as `scripts/stack env` prints),
    /// else the local stack's admin principal when its password file exists
    /// (`$OUTLIER_STATE/auth/kafka/admin.password`, by default under the
    /// source tree's `.outlier/`). `None`: no authentication.
    pub fn from_env() -> Option<SaslConfig> {
        if let Ok(username) = std::env::var("OUTLIER_KAFKA_USER") {
            return Some(SaslConfig {
                mechanism: default_mechanism(),
                username,
                password: String::new(),
                password_file: std::env::var("OUTLIER_KAFKA_PASSWORD_FILE").unwrap_or_default(),
                ca: String::new(),
            });
        }
        let admin = Self::stack_admin(&Self::local_stack_state());
        std::path::Path::new(&admin.password_file)
            .is_file()
            .then_some(admin)
    }

    /// The local stack's state directory: `$OUTLIER_STATE`, by default the
    /// source tree's `.outlier/`.
    pub fn local_stack_state() -> std::path::PathBuf {
        std::env::var("OUTLIER_STATE")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.outlier").to_string())
            .into()
    }

    /// Credentials of the stack principal `name` (scripts/stack keeps its
    /// password in `STATE/auth/kafka/NAME.password`).
    pub fn stack_principal(state: &std::path::Path, name: &str) -> SaslConfig {
        SaslConfig {
            mechanism: default_mechanism(),
            username: name.into(),
            password: String::new(),
            password_file: state
                .join(format!("auth/kafka/{name}.password"))
                .display()
                .to_string(),
            ca: String::new(),
        }
    }

    /// Admin credentials of a stack whose state directory is `state`.
    pub fn stack_admin(state: &std::path::Path) -> SaslConfig {
        Self::stack_principal(state, "admin")
    }

    /// These credentials as a `[kafka.sasl]` TOML table (for the config
    /// files tests write).
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml_quote(s);
        format!(
            "[kafka.sasl]\nmechanism = {}\nusername = {}\npassword_file = {}\n",
            q(&self.mechanism),
            q(&self.username),
            q(&self.password_file)
        )
    }

    /// The environment variables giving these credentials to a binary
    /// whose settings come from `PREFIX__*` (e.g. `OUTLIER_COLLECTOR`).
    pub fn env_vars(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                format!("{prefix}__KAFKA__SASL__USERNAME"),
                self.username.clone(),
            ),
            (
                format!("{prefix}__KAFKA__SASL__PASSWORD_FILE"),
                self.password_file.clone(),
            ),
        ]
    }

    /// The password, from `password` or `password_file`.
    pub fn password(&self) -> Result<String, String> {
        if !self.password.is_empty() {
            return Ok(self.password.clone());
        }
        if self.password_file.is_empty() {
            return Err("kafka.sasl: set password_file (or password)".into());
        }
        crate::config::read_secret_file("kafka.sasl.password_file", &self.password_file)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_string(),
            topics: Topics::default(),
            properties: BTreeMap::new(),
            sasl: None,
            org_topics: false,
        }
    }
}

/// The pipeline's topics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Raw events from collectors, keyed by org/workload.
    pub events: String,
    /// Every scored event.
    pub scored: String,
    /// Scored events whose verdict is warn or alert.
    pub alerts: String,
    /// Records that could not be decoded, with the reason in a header.
    pub deadletter: String,
    /// Operators' verdicts on events (`outlier.v1.Feedback`), written only
    /// by operators and the indexer; as many partitions as the events
    /// topics, so a workload's feedback reaches the scorer that owns it.
    pub feedback: String,
    /// Collectors' heartbeats, forwarded by the scorers once their org is
    /// checked; the indexer keeps each host's latest.
    pub heartbeats: String,
    /// Operators' suppression rules (`outlier.v1.Suppression`), compacted,
    /// keyed org/id, written only by operators and the indexer; every
    /// scorer and indexer reads all of it.
    pub suppressions: String,
    /// Fleet signatures (`outlier.v1.Signature`), compacted, keyed org/id,
    /// written only by operators and the indexer; every scorer reads all
    /// of it.
    pub signatures: String,
    /// Alerts as OCSF Detection Findings (JSON), for SIEMs; written by the
    /// indexer.
    pub findings: String,
}

impl Topics {
    /// The events topic of one org (`{events}.{org}`), or why the org
    /// cannot name a topic.
    pub fn events_for_org(&self, org: &str) -> Result<String, String> {
        let ok = !org.is_empty()
            && org
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let topic = format!("{}.{org}", self.events);
        if !ok || topic.len() > 249 {
            return Err(format!(
                "org `{org}` cannot name a Kafka topic (kafka.org_topics needs letters, digits, `_` and `-`, and a topic name of at most 249 bytes)"
            ));
        }
        Ok(topic)
    }

    /// The org whose own events topic `topic` is; `None` for the shared one.
    pub fn org_of_events_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix(self.events.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
    }

    /// The subscription pattern of the shared events topic and every org's.
    pub fn events_pattern(&self) -> String {
        let mut re = String::from("^");
        for c in self.events.chars() {
            if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
                re.push('\\');
            }
            re.push(c);
        }
        re.push_str("(\\.[A-Za-z0-9_-]+)?$");
        re
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: "outlier.events.v1".to_string(),
            scored: "outlier.scored.v1".to_string(),
            alerts: "outlier.alerts.v1".to_string(),
            deadletter: "outlier.deadletter.v1".to_string(),
            feedback: "outlier.feedback.v1".to_string(),
            heartbeats: "outlier.heartbeats.v1".to_string(),
            suppressions: "outlier.suppressions.v1".to_string(),
            signatures: "outlier.signatures.v1".to_string(),
            findings: "outlier.findings.v1".to_string(),
        }
    }
}

/// Header naming what a record on an events topic holds when it is not an
/// event: `heartbeat` (an `outlier.v1.Heartbeat`). Feedback once travelled
/// there as `feedback`; it is refused now (it has its own topic, which
/// collectors cannot write).
pub const RECORD_KIND_HEADER: &str = "outlier-record";
/// [`RECORD_KIND_HEADER`] value of a collector's heartbeat.
pub const HEARTBEAT_KIND: &str = "heartbeat";

/// Sends one record and waits for Kafka's acknowledgement.
pub async fn send_keyed(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), KafkaError> {
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(payload),
            timeout,
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Sends an operator's feedback to the feedback topic, keyed like its event
/// so that it reaches the scorer that owns the workload (the scorers read
/// the feedback topic co-partitioned with the events topics).
pub async fn send_feedback(
    producer: &rdkafka::producer::FutureProducer,
    topics: &Topics,
    fb: &outlier_proto::Feedback,
    timeout: Duration,
) -> Result<(), KafkaError> {
    use prost::Message as _;
    let key = fb
        .event
        .as_ref()
        .map(|e| e.partition_key())
        .unwrap_or_default();
    send_keyed(
        producer,
        &topics.feedback,
        &key,
        &fb.encode_to_vec(),
        timeout,
    )
    .await
}

/// The [`RECORD_KIND_HEADER`] value of a record, if it has the header.
pub fn record_kind<M: rdkafka::Message>(m: &M) -> Option<&[u8]> {
    use rdkafka::message::Headers as _;
    m.headers()?
        .iter()
        .find(|h| h.key == RECORD_KIND_HEADER)
        .map(|h| h.value.unwrap_or_default())
}

/// Whether a record of an events topic is a collector's heartbeat.
pub fn is_heartbeat<M: rdkafka::Message>(m: &M) -> bool {
    record_kind(m) == Some(HEARTBEAT_KIND.as_bytes())
}

/// Header carrying the reason a record went to the dead-letter topic.
pub const DLQ_REASON_HEADER: &str = "outlier-dlq-reason";
/// Header naming the topic/partition/offset a dead-lettered record came from.
pub const DLQ_SOURCE_HEADER: &str = "outlier-dlq-source";

/// Most bytes of a record's payload kept in its dead-letter copy.
pub const DLQ_MAX_PAYLOAD: usize = 64 * 1024;

/// The headers of a dead-letter copy: why, and where it came from.
pub fn dead_letter_headers(reason: &str, source: &str) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::Header;
    rdkafka::message::OwnedHeaders::new()
        .insert(Header {
            key: DLQ_REASON_HEADER,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: DLQ_SOURCE_HEADER,
            value: Some(source.as_bytes()),
        })
}

/// Where a consumed record came from, as dead-letter copies name it:
/// `topic/partition/offset`.
pub fn source_of<M: rdkafka::Message>(m: &M) -> String {
    format!("{}/{}/{}", m.topic(), m.partition(), m.offset())
}

/// A record for the dead-letter topic: the original key, the payload cut
/// to [`DLQ_MAX_PAYLOAD`], and headers with the reason and the source.
#[derive(Debug, Clone)]
pub struct DeadLetterCopy {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: rdkafka::message::OwnedHeaders,
}

impl DeadLetterCopy {
    pub fn new(key: &[u8], payload: &[u8], reason: &str, source: &str) -> Self {
        Self {
            key: key.to_vec(),
            payload: payload[..payload.len().min(DLQ_MAX_PAYLOAD)].to_vec(),
            headers: dead_letter_headers(reason, source),
        }
    }

    /// The copy of a consumed record.
    pub fn of<M: rdkafka::Message>(m: &M, reason: &str) -> Self {
        Self::new(
            m.key().unwrap_or_default(),
            m.payload().unwrap_or_default(),
            reason,
            &source_of(m),
        )
    }
}

/// Sends a dead-letter copy to `topic`, retrying while Kafka is away; a
/// copy Kafka refuses for itself (too large, invalid) is cut to 1 KiB once,
/// then dropped and logged, so it never holds anything up. `false` if
/// shutdown came first.
pub async fn send_dead_letter(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    copy: &DeadLetterCopy,
    shutdown: &CancellationToken,
) -> bool {
    let mut payload = copy.payload.as_slice();
    let mut delay = Duration::from_millis(100);
    loop {
        let rec = rdkafka::producer::FutureRecord::to(topic)
            .key(&copy.key)
            .payload(payload)
            .headers(copy.headers.clone());
        match producer.send(rec, Duration::from_secs(5)).await {
            Ok(_) => return true,
            Err((e, _)) if failure(&e) == crate::retry::Failure::Poison => {
                if payload.len() > 1024 {
                    payload = &payload[..1024];
                    continue;
                }
                tracing::error!(topic, error = %e, "dead-letter copy refused by Kafka; dropped");
                return true;
            }
            Err((e, _)) => tracing::warn!(topic, error = %e, "dead-letter delivery failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

impl KafkaConfig {
    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("socket.keepalive.enable", "true");
        if let Some(sasl) = &self.sasl {
            let protocol = if sasl.ca.is_empty() {
                "SASL_PLAINTEXT"
            } else {
                c.set("ssl.ca.location", &sasl.ca);
                "SASL_SSL"
            };
            c.set("security.protocol", protocol)
                .set("sasl.mechanisms", &sasl.mechanism)
                .set("sasl.username", &sasl.username);
            match sasl.password() {
                Ok(p) => {
                    c.set("sasl.password", p);
                }
                // validate() reports it at start-up; the broker refuses us.
                Err(e) => tracing::error!(error = %e, "kafka password unavailable"),
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Producer settings: idempotent and acks=all, so a retried send never
    /// duplicates or reorders and an acknowledged record survives a broker.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // Fewer, larger requests: the broker's cost is per request,
            // and 20 ms is small against the pipeline's latency budget.
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "300000");
        // User properties win over our defaults.
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Consumer settings for at-least-once processing: offsets are stored by
    /// the application only after the result is safely downstream, and only
    /// stored offsets are committed.
    pub fn consumer_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            // Under load, wait for 64 KiB (or 50 ms) per fetch instead of
            // asking the broker for every few records.
            .set("fetch.min.bytes", "65536")
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A reader of its own: a group nobody else joins (named `group-<id>`,
    /// so ACLs granted on the prefix `group` cover it), nothing committed;
    /// it follows the positions it is assigned.
    pub fn reader(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        let mut cfg =
            self.consumer_config(group, &format!("{group}-{}", uuid::Uuid::now_v7().simple()));
        cfg.set("enable.auto.commit", "false");
        cfg.create()
    }

    /// Checks the settings at start-up; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(sasl) = &self.sasl {
            if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&sasl.mechanism.as_str()) {
                return Err(format!(
                    "kafka.sasl.mechanism must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, not `{}`",
                    sasl.mechanism
                ));
            }
            if sasl.username.is_empty() {
                return Err("kafka.sasl.username is empty".into());
            }
            sasl.password()?;
            if !sasl.ca.is_empty() && !std::path::Path::new(&sasl.ca).is_file() {
                return Err(format!("kafka.sasl.ca {}: no such file", sasl.ca));
            }
        }
        Ok(())
    }

    /// Fetches cluster metadata once; the error says which brokers failed.
    pub fn probe(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let consumer: BaseConsumer = self.base("outlier-probe").create()?;
        let md = consumer.fetch_metadata(None, timeout)?;
        Ok(md.brokers().len())
    }

    /// Waits until the brokers answer, retrying with exponential backoff
    /// (capped at 30 s) and logging each failure. Returns `false` if
    /// `shutdown` fired first.
    pub async fn wait_until_reachable(&self, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(250);
        loop {
            let cfg = self.clone();
            let res = tokio::task::spawn_blocking(move || cfg.probe(Duration::from_secs(5))).await;
            match res {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => tracing::warn!(
                    brokers = %self.brokers,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "kafka unreachable"
                ),
                Err(e) => tracing::error!(error = %e, "kafka probe task failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Creates the given topics if they do not exist.
    pub async fn ensure_topics(&self, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base("outlier-admin").create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, error = %code, "topic creation failed");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

/// Whether a produce error is the record's own (the broker will never take
/// it: too large, invalid) or may pass (brokers away, timeouts, queue full).
pub fn failure(e: &KafkaError) -> crate::retry::Failure {
    use crate::retry::Failure;
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord,
        ) => Failure::Poison,
        _ => Failure::Retriable,
    }
}

/// Probes the brokers every 10 s and sets the `kafka` health check from
/// the answer, so the check recovers when Kafka does (the client context
/// only reports it lost).
pub fn spawn_health_probe(
    kafka: KafkaConfig,
    health: crate::telemetry::Health,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let k = kafka.clone();
            match tokio::task::spawn_blocking(move || k.probe(Duration::from_secs(5))).await {
                Ok(Ok(_)) => health.set(
                    Check::Kafka,
                    true,
                    format!("reachable at {}", kafka.brokers),
                ),
                Ok(Err(e)) => health.set(Check::Kafka, false, e.to_string()),
                Err(_) => {}
            }
        }
    });
}

/// Consumer context for at-least-once consumers: logs rebalances, commits
/// stored offsets synchronously before partitions are taken away (so the next
/// owner starts exactly after what this one finished), and marks the `kafka`
/// health check down when the brokers are lost.
pub struct CommitOnRevoke {
    pub health: crate::telemetry::Health,
    /// Partitions revoked since the owner last drained the list.
    pub revoked: std::sync::Arc<std::sync::Mutex<Vec<(String, i32)>>>,
}

impl CommitOnRevoke {
    pub fn new(health: crate::telemetry::Health) -> Self {
        Self {
            health,
            revoked: Default::default(),
        }
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl rdkafka::ClientContext for CommitOnRevoke {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.health.set(Check::Kafka, false, reason.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                commit_stored(consumer);
                let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                revoked.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Commits the stored offsets synchronously; "nothing to commit" is fine.
pub fn commit_stored<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C) {
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        && !matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset))
    {
        tracing::warn!(error = %e, "offset commit failed");
    }
}

/// How a group shares the partitions of the topics it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Cooperative-sticky: few partitions move at a rebalance.
    Sticky,
    /// Range: partition `i` of every subscribed topic with the same
    /// partition count goes to the same member, so records keyed alike on
    /// two topics (a workload's events and its feedback) meet in one
    /// consumer. Rebalances revoke everything (eager).
    CoPartitioned,
}

/// Waits for the brokers, then creates an at-least-once consumer of
/// `topics` (names, or patterns starting with `^`) in `group` (committing
/// on revoke, reporting to `health`) and a producer. `None` if `shutdown`
/// fired first.
pub async fn at_least_once_clients(
    kafka: &KafkaConfig,
    client_id: &str,
    group: &str,
    topics: &[&str],
    assignment: Assignment,
    health: &crate::telemetry::Health,
    shutdown: &CancellationToken,
) -> Result<
    Option<(
        rdkafka::consumer::StreamConsumer<CommitOnRevoke>,
        rdkafka::producer::FutureProducer,
    )>,
    KafkaError,
> {
    if !kafka.wait_until_reachable(shutdown).await {
        return Ok(None);
    }
    health.set(
        Check::Kafka,
        true,
        format!("reachable at {}", kafka.brokers),
    );
    let mut config = kafka.consumer_config(client_id, group);
    if assignment == Assignment::CoPartitioned {
        config.set("partition.assignment.strategy", "range");
    }
    if topics.iter().any(|t| t.starts_with('^')) {
        // A new org's topic is read within 10 s of its creation.
        config.set("topic.metadata.refresh.interval.ms", "10000");
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    let consumer: rdkafka::consumer::StreamConsumer<CommitOnRevoke> =
        config.create_with_context(CommitOnRevoke::new(health.clone()))?;
    consumer.subscribe(topics)?;
    let producer = kafka.producer_config(client_id).create()?;
    Ok(Some((consumer, producer)))
}

/// How large a micro-batch may grow: records and bytes (keys and
/// payloads). A batch holds at least one record, whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBound {
    pub records: usize,
    pub bytes: usize,
}

impl BatchBound {
    /// Side consumers' batches: 1,000 records or 16 MiB.
    pub const SIDE: BatchBound = BatchBound {
        records: 1000,
        bytes: 16 << 20,
    };

    /// Whether a batch of `records` records and `bytes` bytes is full.
    pub fn full(&self, records: usize, bytes: usize) -> bool {
        records >= self.records || bytes >= self.bytes
    }
}

fn message_bytes(m: &rdkafka::message::OwnedMessage) -> usize {
    use rdkafka::Message as _;
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)
}

/// Completes a micro-batch that starts with `first`: takes what arrives
/// within `max_wait` until the batch is full by `bound`. Records are
/// detached (owned).
///
/// Call this outside any `select!`: dropping it mid-way would drop records
/// already taken from the consumer. Only the wait for `first`
/// (`StreamConsumer::recv`) is safe to race against other futures.
pub async fn fill_batch<X: rdkafka::consumer::ConsumerContext + 'static>(
    consumer: &rdkafka::consumer::StreamConsumer<X>,
    first: rdkafka::message::OwnedMessage,
    bound: BatchBound,
    max_wait: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let mut bytes = message_bytes(&first);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + max_wait;
    while !bound.full(batch.len(), bytes) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                let m = m.detach();
                bytes += message_bytes(&m);
                batch.push(m);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// The next batch of a side consumer (the indexer's incident, OCSF,
/// webhook and side-table writers): waits for a first record, then takes
/// what else arrives within `max_wait`, up to `bound`. `None` once
/// `shutdown` fires. A failed receive is logged and waited out.
pub async fn next_batch<X: rdkafka::consumer::ConsumerContext + 'static>(
    consumer: &rdkafka::consumer::StreamConsumer<X>,
    bound: BatchBound,
    max_wait: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Vec<rdkafka::message::OwnedMessage>> {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return None,
            m = consumer.recv() => match m {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        return Some(fill_batch(consumer, first, bound, max_wait).await);
    }
}

/// The highest offset per (topic, partition) in `batch`, to store once the
/// batch is safely downstream.
pub fn batch_offsets(
    batch: &[rdkafka::message::OwnedMessage],
) -> std::collections::BTreeMap<(String, i32), i64> {
    use rdkafka::Message as _;
    let mut offsets = std::collections::BTreeMap::new();
    for m in batch {
        let e = offsets
            .entry((m.topic().to_string(), m.partition()))
            .or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    offsets
}

/// Stores offsets after their records are safely downstream. A failure means
/// the partition moved to another consumer, which redoes the records.
pub fn store_offsets<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    offsets: &std::collections::BTreeMap<(String, i32), i64>,
) {
    for ((topic, partition), offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(topic = %topic, partition, error = %e, "offset not stored");
        }
    }
}

/// Offsets to store, by (topic, partition): the next offset to consume.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Waits for every batch still in flight, oldest first, storing each one's
/// offsets as it completes. A batch yields `None` when shutdown cut it short:
/// the rest are dropped unstored (their records are redone by the next
/// owner) and this returns `false`.
pub async fn finish_in_order<F, C, X>(
    inflight: &mut futures::stream::FuturesOrdered<F>,
    consumer: &C,
) -> bool
where
    F: std::future::Future<Output = Option<Offsets>>,
    C: Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    use futures::StreamExt as _;
    while let Some(done) = inflight.next().await {
        match done {
            Some(offsets) => store_offsets(consumer, &offsets),
            None => {
                inflight.clear();
                return false;
            }
        }
    }
    true
}

/// The partitions of `topic`; an error when it has none (it does not exist
/// yet).
pub fn partitions(consumer: &StreamConsumer, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_full_by_records_or_by_bytes_whichever_first() {
        let b = BatchBound {
            records: 3,
            bytes: 1000,
        };
        assert!(!b.full(1, 10));
        assert!(b.full(3, 10), "by records");
        assert!(b.full(1, 1000), "by bytes: one large record is a batch");
        assert!(!b.full(2, 999));
        // A stream of 400-byte records is cut after three by bytes... and of
        // 10-byte records after three by count.
        let cut = |size: usize| (1..).find(|&n| b.full(n, n * size)).unwrap();
        assert_eq!(cut(400), 3);
        assert_eq!(cut(600), 2);
        assert_eq!(cut(2000), 1);
        assert_eq!(cut(10), 3);
    }

    #[test]
    fn consumer_never_auto_stores_offsets() {
        let c = KafkaConfig::default().consumer_config("t", "g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        let p = KafkaConfig::default().producer_config("t");
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn org_topics_are_named_and_matched_by_the_pattern() {
        let t = Topics::default();
        assert_eq!(
            t.events_for_org("acme-1").unwrap(),
            "outlier.events.v1.acme-1"
        );
        for bad in ["", "a.b", "a/b", "ä", &"x".repeat(240)] {
            assert!(t.events_for_org(bad).is_err(), "{bad}");
        }
        assert_eq!(
            t.org_of_events_topic("outlier.events.v1.acme"),
            Some("acme")
        );
        assert_eq!(t.org_of_events_topic("outlier.events.v1"), None);
        assert_eq!(t.org_of_events_topic("outlier.events.v1x"), None);
        let pattern = t.events_pattern();
        let re = regex_lite_match(&pattern);
        assert!(re("outlier.events.v1"));
        assert!(re("outlier.events.v1.acme"));
        assert!(!re("outlier.events.v1.a.b"));
        assert!(!re("outlierXevents.v1"));
        assert!(!re("outlier.events.v10"));
        assert!(!re("outlier.feedback.v1"));
    }

    /// A matcher for the patterns [`Topics::events_pattern`] builds:
    /// `^literal(\.[A-Za-z0-9_-]+)?$` with escaped dots.
    fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool {
        let body = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix("(\\.[A-Za-z0-9_-]+)?$"))
            .expect("pattern shape")
            .replace('\\', "");
        move |topic: &str| match topic.strip_prefix(body.as_str()) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('.').is_some_and(|o| {
                !o.is_empty()
                    && o.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }),
            None => false,
        }
    }

    #[test]
    fn sasl_sets_the_protocol_and_reads_the_password_file() {
        let dir = std::env::temp_dir().join(format!("outlier-sasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut k = KafkaConfig {
            sasl: Some(SaslConfig {
                mechanism: default_mechanism(),
                username: "scorer".into(),
                password: String::new(),
                password_file: file.display().to_string(),
                ca: String::new(),
            }),
            ..KafkaConfig::default()
        };
        k.validate().unwrap();
        let c = k.producer_config("t");
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("sasl.username"), Some("scorer"));
        k.sasl.as_mut().unwrap().password_file = dir.join("missing").display().to_string();
        let e = k.validate().unwrap_err();
        assert!(e.contains("kafka.sasl.password_file"), "{e}");
        k.sasl.as_mut().unwrap().mechanism = "GSSAPI".into();
        assert!(k.validate().unwrap_err().contains("kafka.sasl.mechanism"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn user_properties_override_defaults() {
        let mut k = KafkaConfig::default();
        k.properties.insert("linger.ms".into(), "50".into());
        assert_eq!(k.producer_config("t").get("linger.ms"), Some("50"));
    }
}
