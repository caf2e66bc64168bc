//! The ClickHouse sink: a consumer group over the scored topic, batched
//! inserts (flush by size or time), several batches in flight, offsets
//! stored in order, each only after ClickHouse accepted its batch and
//! every batch before it. A failed insert is retried with backoff and nothing
//! is committed meanwhile, so nothing acknowledged is lost; a replayed batch
//! collapses into the same rows (ReplacingMergeTree on event_id).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use outlier_common::batch;
use outlier_common::featurize::{behaviour_key, embed};
use outlier_common::kafka::{self, DeadLetterCopy};
use outlier_common::retry::{self, Attempt, Failure, RetryPolicy};
use outlier_common::telemetry::{self, Check, Health};
use outlier_proto::ScoredEvent;
use prost::Message as _;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::auth::Authorizer;
use crate::config::IndexerConfig;
use crate::grpc::{self, Services};
use crate::metrics;
use crate::row::EventRow;
use crate::schema;
use crate::search_index::{self, Entry, SearchIndex, SearchIndexError};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("http or grpc endpoint: {0}")]
    Http(#[from] std::io::Error),
    #[error("search index: {0}")]
    Search(#[from] SearchIndexError),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// A ClickHouse client for `cfg` (validation off: works on 18.16 too).
pub fn client(cfg: &crate::config::ClickHouseConfig) -> Client {
    let c = Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(cfg.password().unwrap_or_default())
        .with_database(&cfg.database)
        .with_validation(false);
    if cfg.cluster.is_empty() {
        c
    } else {
        // An insert into a Distributed table returns once a replica has
        // stored it, not once it is queued on the server that received it
        // (which may die before sending it on): offsets follow only then.
        c.with_setting("insert_distributed_sync", "1")
    }
}

/// Runs the indexer until `shutdown` fires.
pub async fn run(cfg: IndexerConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    cfg.validate().map_err(RunError::Config)?;
    let auth = if cfg.auth.insecure {
        tracing::warn!(addr = %cfg.grpc_addr, "auth.insecure: gRPC without TLS or tokens (loopback only)");
        Authorizer::insecure()
    } else {
        Authorizer::from_file(std::path::Path::new(&cfg.auth.tokens_file))
            .map_err(RunError::Config)?
    };
    let tls = if cfg.tls.cert.is_empty() {
        None
    } else {
        let read = |key: &str, path: &str| {
            std::fs::read(path).map_err(|e| RunError::Config(format!("{key} {path}: {e}")))
        };
        Some(tonic::transport::Identity::from_pem(
            read("tls.cert", &cfg.tls.cert)?,
            read("tls.key", &cfg.tls.key)?,
        ))
    };
    let health = Health::new(&[Check::Kafka, Check::ClickHouse, Check::LanceDb]);
    telemetry::serve_http(cfg.http_addr, health.clone(), shutdown.clone()).await?;
    let search = Arc::new(SearchIndex::open(&cfg.search.uri).await?);
    health.set(
        Check::LanceDb,
        true,
        format!("search index at {}", cfg.search.uri),
    );

    // The schema must exist before anything is consumed.
    let ch = client(&cfg.clickhouse);
    let admin = Client::default()
        .with_url(&cfg.clickhouse.url)
        .with_user(&cfg.clickhouse.user)
        .with_password(cfg.clickhouse.password().unwrap_or_default())
        .with_validation(false);
    let layout = schema::Layout::of(&cfg.clickhouse.cluster);
    let mut delay = Duration::from_millis(250);
    let version = loop {
        match schema::migrate(
            &admin,
            &cfg.clickhouse.database,
            &layout,
            cfg.clickhouse.retention_days,
        )
        .await
        {
            Ok(v) => break v,
            Err(e) => {
                health.set(Check::ClickHouse, false, e.to_string());
                tracing::warn!(url = %cfg.clickhouse.url, error = %e, retry_in_ms = delay.as_millis() as u64, "clickhouse unreachable or schema migration failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    };
    health.set(
        Check::ClickHouse,
        true,
        format!("server {}.{}", version.major, version.minor),
    );
    tracing::info!(
        major = version.major,
        minor = version.minor,
        ttl = version.has_ttl(),
        "clickhouse schema ready"
    );

    let suppressions = outlier_common::suppress::Suppressions::default();
    tokio::spawn(outlier_common::suppress::follow(
        cfg.kafka.clone(),
        "outlier-indexer",
        suppressions.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let signatures = outlier_common::immune::Signatures::default();
    tokio::spawn(outlier_common::immune::follow(
        cfg.kafka.clone(),
        "outlier-indexer",
        signatures.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let services = Services {
        ch: ch.clone(),
        search: search.clone(),
        kafka: cfg.kafka.clone(),
        shutdown: shutdown.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(grpc::MAX_INCIDENT_STREAMS)),
        alerts: crate::alert_hub::AlertHub::start(cfg.kafka.clone(), shutdown.clone()),
        auth: Arc::new(auth),
        producer: cfg
            .kafka
            .producer_config("outlier-indexer-feedback")
            .create()?,
        suppressions,
        signatures,
    };
    let console_tls =
        (!cfg.tls.cert.is_empty()).then(|| (cfg.tls.cert.clone(), cfg.tls.key.clone()));
    grpc::serve(cfg.grpc_addr, services.clone(), tls, shutdown.clone()).await?;
    if let Some(addr) = cfg
        .console
        .address(cfg.auth.insecure)
        .map_err(RunError::Config)?
    {
        crate::console::serve(
            addr,
            services,
            &cfg.console,
            console_tls.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
            shutdown.clone(),
        )
        .await?;
    }
    {
        // Vector-index maintenance of the search tables, off the sink path.
        let search = search.clone();
        let min_rows = cfg.search.index_min_rows;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = search.maintain(min_rows).await {
                    tracing::warn!(error = %e, "search index maintenance failed");
                }
            }
        });
    }

    let hosts = tokio::spawn(crate::hosts::run(
        cfg.kafka.clone(),
        format!("{}-heartbeats", cfg.group_id),
        ch.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let dead_letters = tokio::spawn(crate::deadletters::run(
        cfg.kafka.clone(),
        format!("{}-dead-letters", cfg.group_id),
        ch.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let incidents = tokio::spawn(crate::incidents::run(
        cfg.kafka.clone(),
        format!("{}-incidents", cfg.group_id),
        ch.clone(),
        cfg.incidents.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let findings = tokio::spawn(crate::ocsf::run(
        cfg.kafka.clone(),
        format!("{}-ocsf", cfg.group_id),
        health.clone(),
        shutdown.clone(),
    ));
    let webhook = (!cfg.webhook.url.is_empty()).then(|| {
        tokio::spawn(crate::webhook::run(
            cfg.kafka.clone(),
            format!("{}-webhook", cfg.group_id),
            cfg.webhook.clone(),
            Duration::from_secs(cfg.poison_budget_s),
            health.clone(),
            shutdown.clone(),
        ))
    });
    let audit = tokio::spawn(crate::audit::run(
        cfg.kafka.clone(),
        format!("{}-feedback-audit", cfg.group_id),
        ch.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let Some((consumer, producer)) = kafka::at_least_once_clients(
        &cfg.kafka,
        "outlier-indexer",
        &cfg.group_id,
        &[&cfg.kafka.topics.scored],
        kafka::Assignment::Sticky,
        &health,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    tracing::info!(topic = %cfg.kafka.topics.scored, group = %cfg.group_id, "indexer running");
    // The consumer only reports Kafka lost; the probe reports it back.
    kafka::spawn_health_probe(cfg.kafka.clone(), health.clone(), shutdown.clone());

    let mut sink = Sink {
        ch: ch.clone(),
        admin: &admin,
        layout: &layout,
        retention: !version.has_ttl(),
        producer,
        cfg: Arc::new(cfg.clone()),
        health: health.clone(),
        shutdown: shutdown.clone(),
        search: search.clone(),
        search_lock: Arc::default(),
        known: HashSet::new(),
    };
    // Up to max_inflight batches are written at once; a batch's offsets
    // are stored once it and every batch before it are in ClickHouse and
    // the search index (at shutdown a write still retrying is given up and
    // its batch is redone by the next owner).
    let settings = batch::Settings {
        max_records: cfg.batch.max_rows,
        max_bytes: cfg.batch.max_bytes,
        max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
        max_inflight: cfg.batch.max_inflight,
    };
    let Ok(()) = batch::run(&consumer, settings, &mut sink, &shutdown).await;
    let _ = audit.await;
    let _ = hosts.await;
    let _ = dead_letters.await;
    let _ = incidents.await;
    let _ = findings.await;
    if let Some(w) = webhook {
        let _ = w.await;
    }
    tracing::info!("indexer stopped");
    Ok(())
}

struct Sink<'a> {
    ch: Client,
    /// Partition upkeep (retention on servers without TTL).
    admin: &'a Client,
    layout: &'a schema::Layout,
    /// Whether expired partitions are dropped here (no TTL on the server).
    retention: bool,
    producer: FutureProducer,
    cfg: Arc<IndexerConfig>,
    health: Health,
    shutdown: CancellationToken,
    search: Arc<SearchIndex>,
    /// One search-index write at a time: concurrent merge-inserts into one
    /// LanceDB table would only conflict and retry.
    search_lock: Arc<tokio::sync::Mutex<()>>,
    /// Behaviours already in the search index, or on their way there
    /// (hashes of org and row id), so repeated behaviour costs no embedding
    /// and no write.
    known: HashSet<u64>,
}

/// Most behaviour ids remembered before the memory is reset.
const KNOWN_MAX: usize = 2_000_000;

impl batch::Stage for Sink<'_> {
    type Error = std::convert::Infallible;

    /// Dropping expired partitions, where the server has no TTL.
    fn periods(&self) -> Vec<Duration> {
        if self.retention {
            vec![Duration::from_secs(3600)]
        } else {
            Vec::new()
        }
    }

    async fn batch(
        &mut self,
        batch: Vec<OwnedMessage>,
    ) -> Result<Option<batch::Pending>, Self::Error> {
        let offsets = kafka::batch_offsets(&batch);
        Ok(self
            .prepare(&batch)
            .await
            .map(|write| Box::pin(async move { write.await.then_some(offsets) }) as batch::Pending))
    }

    async fn tick(&mut self, _: usize) {
        let today = schema::yyyymmdd_of_unix(outlier_common::now_ns() / 1_000_000_000);
        let (db, days) = (
            &self.cfg.clickhouse.database,
            self.cfg.clickhouse.retention_days,
        );
        match schema::drop_expired_partitions(self.admin, db, self.layout, days, today).await {
            Ok(d) if !d.is_empty() => tracing::info!(partitions = ?d, "dropped expired partitions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

impl<'a> Sink<'a> {
    /// Decodes a batch (undecodable records go to the dead-letter topic)
    /// and returns the write of the rest: the ClickHouse insert, then its
    /// new behaviours into the search index, each retried until it
    /// succeeds; the write yields `false` if shutdown came first. `None`
    /// if shutdown came while dead-lettering.
    async fn prepare(
        &mut self,
        batch: &[OwnedMessage],
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send>>> {
        let mut scored = Vec::with_capacity(batch.len());
        for m in batch {
            match m.payload().map(ScoredEvent::decode) {
                Some(Ok(s)) if s.event.is_some() => scored.push(s),
                other => {
                    let reason = match other {
                        Some(Err(e)) => format!("not an outlier.v1.ScoredEvent: {e}"),
                        Some(Ok(_)) => "scored event without an event".to_string(),
                        None => "empty record".to_string(),
                    };
                    let (key, payload) =
                        (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                    let source = kafka::source_of(m);
                    let (producer, cfg, shutdown) = (&self.producer, &*self.cfg, &self.shutdown);
                    if !dead_letter(producer, cfg, key, payload, &reason, &source, shutdown).await {
                        return None;
                    }
                }
            }
        }
        // Behaviours new to the search index, by org. They count as known
        // from here on: the write below retries until it succeeds, and a
        // shutdown before that leaves the batch's offsets unstored, so the
        // next owner indexes them again.
        let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut batch_known = HashSet::new();
        for s in &mut scored {
            let event = s.event.as_ref().expect("checked above");
            let mut vector = None;
            if s.behaviour_key == 0 {
                let v = embed(event);
                s.behaviour_key = behaviour_key(&v);
                vector = Some(v);
            }
            let id = known_id(&event.org, &event.workload, s.behaviour_key);
            if self.known.contains(&id) || !batch_known.insert(id) {
                continue;
            }
            entries.entry(event.org.clone()).or_default().push(Entry {
                workload: event.workload.clone(),
                behaviour_key: s.behaviour_key,
                vector: vector.unwrap_or_else(|| embed(event)),
                last_seen_ns: event.ts_ns,
                event_id: event.event_id.clone(),
            });
        }
        if self.known.len() + batch_known.len() > KNOWN_MAX {
            self.known.clear();
        }
        self.known.extend(batch_known);
        let retention = self.cfg.clickhouse.retention_days;
        let rows: Vec<EventRow> = scored
            .iter()
            .map(|s| {
                let mut r = EventRow::from_scored(s);
                r.ts = crate::row::clamped_ts(r.ts_ns, r.scored_at_ns, retention);
                r
            })
            .collect();
        let (ch, health, shutdown) = (self.ch.clone(), self.health.clone(), self.shutdown.clone());
        let (producer, cfg) = (self.producer.clone(), self.cfg.clone());
        let (search, search_lock) = (self.search.clone(), self.search_lock.clone());
        Some(Box::pin(async move {
            let (ch, health, shutdown) = (&ch, &health, &shutdown);
            let (producer, cfg, search) = (&producer, &*cfg, &*search);
            if rows.is_empty() {
                return true;
            }
            let t = Instant::now();
            if !insert_all(ch, producer, cfg, health, shutdown, &rows).await {
                return false;
            }
            metrics::INSERT_SECONDS.observe(t.elapsed().as_secs_f64());
            metrics::BATCH_ROWS.observe(rows.len() as f64);
            let now = outlier_common::now_ns();
            for r in &rows {
                metrics::LAG_SECONDS.observe(now.saturating_sub(r.ts_ns) as f64 / 1e9);
            }
            if entries.is_empty() {
                return true;
            }
            let _one_writer = search_lock.lock().await;
            let mut backoff = retry::Backoff::new(RetryPolicy {
                max_delay: Duration::from_secs(30),
                ..RetryPolicy::default()
            });
            loop {
                match index(search, health, &entries).await {
                    Ok(()) => return true,
                    Err(e) => {
                        health.set(Check::LanceDb, false, e.to_string());
                        tracing::warn!(error = %e, "search index write failed; retrying");
                    }
                }
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }))
    }
}

async fn index(
    search: &SearchIndex,
    health: &Health,
    entries: &HashMap<String, Vec<Entry>>,
) -> Result<(), SearchIndexError> {
    for (org, e) in entries {
        search.upsert(org, e).await?;
        metrics::SEARCH_UPSERTS.inc_by(e.len() as u64);
    }
    health.set(Check::LanceDb, true, "search index writes succeed");
    Ok(())
}

fn known_id(org: &str, workload: &str, key: u64) -> u64 {
    let mut buf = Vec::with_capacity(org.len() + 9);
    buf.extend_from_slice(org.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&search_index::row_id(workload, key).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// Inserts a batch, retrying while ClickHouse is away. When the batch keeps
/// failing while ClickHouse answers (past the poison budget), the rows that
/// fail on their own are found by halving, dead-lettered with the server's
/// reason and counted; the rest are inserted. `false` if shutdown came
/// first.
async fn insert_all(
    ch: &Client,
    producer: &FutureProducer,
    cfg: &IndexerConfig,
    health: &Health,
    shutdown: &CancellationToken,
    rows: &[EventRow],
) -> bool {
    let policy = RetryPolicy {
        poison_budget: Duration::from_secs(cfg.poison_budget_s),
        max_delay: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    loop {
        let attempt = retry::retry(
            policy,
            shutdown,
            || insert(ch, rows),
            |_| Failure::Retriable,
            || clickhouse_answers(ch),
            |e, delay| {
                metrics::INSERT_ERRORS.inc();
                health.set(Check::ClickHouse, false, e.to_string());
                tracing::warn!(rows = rows.len(), error = %e, retry_in_ms = delay.as_millis() as u64, "clickhouse insert failed");
            },
        )
        .await;
        match attempt {
            Attempt::Done(()) => {
                metrics::ROWS.inc_by(metrics::RowOutcome::Inserted, rows.len() as u64);
                health.set(Check::ClickHouse, true, "inserts succeed");
                return true;
            }
            Attempt::Shutdown => return false,
            Attempt::Poison(e) => {
                tracing::error!(rows = rows.len(), error = %e, "insert keeps failing while ClickHouse answers; isolating the rows it refuses");
                match isolate(ch, rows).await {
                    Ok(bad) => {
                        let inserted = rows.len() - bad.len();
                        metrics::ROWS.inc_by(metrics::RowOutcome::Inserted, inserted as u64);
                        for (i, reason) in bad {
                            let r = &rows[i];
                            let payload = r.to_scored().encode_to_vec();
                            let reason = format!("refused by ClickHouse: {reason}");
                            let source =
                                format!("{}/event/{}", cfg.kafka.topics.scored, r.event_id);
                            let key = r.org.as_bytes();
                            if !dead_letter(
                                producer, cfg, key, &payload, &reason, &source, shutdown,
                            )
                            .await
                            {
                                return false;
                            }
                        }
                        health.set(Check::ClickHouse, true, "inserts succeed");
                        return true;
                    }
                    // ClickHouse went away meanwhile: back to retrying.
                    Err(e) => tracing::warn!(error = %e, "clickhouse failed while isolating rows"),
                }
            }
        }
    }
}

/// Whether ClickHouse answers a trivial query.
async fn clickhouse_answers(ch: &Client) -> bool {
    ch.query("SELECT 1").fetch_one::<u8>().await.is_ok()
}

/// Inserts `rows` in halves until every row either landed or failed on its
/// own while ClickHouse answers; those are returned with the error.
/// `Err` when ClickHouse stopped answering.
async fn isolate(
    ch: &Client,
    rows: &[EventRow],
) -> Result<Vec<(usize, String)>, clickhouse::error::Error> {
    let mut bad = Vec::new();
    let mut todo = vec![(0usize, rows.len())];
    while let Some((lo, hi)) = todo.pop() {
        match insert(ch, &rows[lo..hi]).await {
            Ok(()) => {}
            Err(e) if hi - lo == 1 => {
                if !clickhouse_answers(ch).await {
                    return Err(e);
                }
                metrics::ROWS.inc(metrics::RowOutcome::Poison);
                bad.push((lo, e.to_string()));
            }
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi));
                todo.push((lo, mid));
            }
        }
    }
    Ok(bad)
}

async fn insert(ch: &Client, rows: &[EventRow]) -> Result<(), clickhouse::error::Error> {
    let mut insert = ch.insert::<EventRow>(schema::TABLE).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

/// Sends a record's payload to the dead-letter topic with the reason,
/// counted and logged; `false` if shutdown came first.
async fn dead_letter(
    producer: &FutureProducer,
    cfg: &IndexerConfig,
    key: &[u8],
    payload: &[u8],
    reason: &str,
    source: &str,
    shutdown: &CancellationToken,
) -> bool {
    metrics::ROWS.inc(metrics::RowOutcome::DeadLetter);
    tracing::warn!(source, reason, "record sent to dead-letter topic");
    let copy = DeadLetterCopy::new(key, payload, reason, source);
    kafka::send_dead_letter(producer, &cfg.kafka.topics.deadletter, &copy, shutdown).await
}
