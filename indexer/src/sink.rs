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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse::Client;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use outlier_common::featurize::{behaviour_key, embed};
use outlier_common::kafka::{self, DLQ_REASON_HEADER, DLQ_SOURCE_HEADER};
use outlier_common::telemetry::{self, Health};
use outlier_proto::ScoredEvent;
use prost::Message as _;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

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
}

/// A ClickHouse client for `cfg` (validation off: works on 18.16 too).
pub fn client(cfg: &crate::config::ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(&cfg.password)
        .with_database(&cfg.database)
        .with_validation(false)
}

/// Runs the indexer until `shutdown` fires.
pub async fn run(cfg: IndexerConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let health = Health::new(&["kafka", "clickhouse", "lancedb"]);
    telemetry::serve_http(cfg.http_addr, health.clone(), shutdown.clone()).await?;
    let search = Arc::new(SearchIndex::open(&cfg.search.uri).await?);
    health.set(
        "lancedb",
        true,
        format!("search index at {}", cfg.search.uri),
    );

    // The schema must exist before anything is consumed.
    let ch = client(&cfg.clickhouse);
    let admin = Client::default()
        .with_url(&cfg.clickhouse.url)
        .with_user(&cfg.clickhouse.user)
        .with_password(&cfg.clickhouse.password)
        .with_validation(false);
    let mut delay = Duration::from_millis(250);
    let version = loop {
        match schema::migrate(
            &admin,
            &cfg.clickhouse.database,
            cfg.clickhouse.retention_days,
        )
        .await
        {
            Ok(v) => break v,
            Err(e) => {
                health.set("clickhouse", false, e.to_string());
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
        "clickhouse",
        true,
        format!("server {}.{}", version.major, version.minor),
    );
    tracing::info!(
        major = version.major,
        minor = version.minor,
        ttl = version.has_ttl(),
        "clickhouse schema ready"
    );

    grpc::serve(
        cfg.grpc_addr,
        Services {
            ch: ch.clone(),
            search: search.clone(),
            kafka: cfg.kafka.clone(),
            shutdown: shutdown.clone(),
        },
        shutdown.clone(),
    )
    .await?;
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

    let Some((consumer, producer)) = kafka::at_least_once_clients(
        &cfg.kafka,
        "outlier-indexer",
        &cfg.group_id,
        &cfg.kafka.topics.scored,
        &health,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    tracing::info!(topic = %cfg.kafka.topics.scored, group = %cfg.group_id, "indexer running");

    let max_wait = Duration::from_millis(cfg.batch.max_wait_ms);
    let search_lock = tokio::sync::Mutex::new(());
    let mut sink = Sink {
        ch: &ch,
        producer: &producer,
        cfg: &cfg,
        health: &health,
        shutdown: &shutdown,
        search: &search,
        search_lock: &search_lock,
        known: HashSet::new(),
    };
    // Batches being written, oldest first: a batch's offsets are stored
    // once it and every batch before it are in ClickHouse and the search
    // index, so consuming and decoding the next batch overlaps with the
    // inserts, and at-least-once holds.
    let mut inflight: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
    let max_inflight = cfg.batch.max_inflight.max(1);
    let mut retention_tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Some(offsets) => kafka::store_offsets(&consumer, &offsets),
                None => break, // shut down before the batch was safely stored
            },
            _ = retention_tick.tick(), if !version.has_ttl() => {
                let today = schema::yyyymmdd_of_unix(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
                match schema::drop_expired_partitions(&admin, &cfg.clickhouse.database, cfg.clickhouse.retention_days, today).await {
                    Ok(d) if !d.is_empty() => tracing::info!(partitions = ?d, "dropped expired partitions"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
            first = consumer.recv(), if inflight.len() < max_inflight => {
                let first = match first {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let batch = kafka::fill_batch(&consumer, first, cfg.batch.max_rows, max_wait).await;
                let offsets = kafka::batch_offsets(&batch);
                match sink.prepare(&batch).await {
                    Some(write) => inflight.push_back(Box::pin(async move {
                        write.await.then_some(offsets)
                    })),
                    None => break, // shut down while dead-lettering
                }
            }
        }
    }
    // Finish the writes in flight and store their offsets, in order; at
    // shutdown a write still retrying is given up and its batch is redone
    // by the next owner.
    kafka::finish_in_order(&mut inflight, &consumer).await;
    drop(inflight);
    kafka::commit_stored(&consumer);
    tracing::info!("indexer stopped");
    Ok(())
}

/// A batch being written: its offsets once it is safely stored, `None` if
/// shutdown came first.
type Pending<'a> = Pin<Box<dyn Future<Output = Option<Offsets>> + Send + 'a>>;
use kafka::Offsets;

struct Sink<'a> {
    ch: &'a Client,
    producer: &'a FutureProducer,
    cfg: &'a IndexerConfig,
    health: &'a Health,
    shutdown: &'a CancellationToken,
    search: &'a SearchIndex,
    /// One search-index write at a time: concurrent merge-inserts into one
    /// LanceDB table would only conflict and retry.
    search_lock: &'a tokio::sync::Mutex<()>,
    /// Behaviours already in the search index, or on their way there
    /// (hashes of org and row id), so repeated behaviour costs no embedding
    /// and no write.
    known: HashSet<u64>,
}

/// Most behaviour ids remembered before the memory is reset.
const KNOWN_MAX: usize = 2_000_000;

impl<'a> Sink<'a> {
    /// Decodes a batch (undecodable records go to the dead-letter topic)
    /// and returns the write of the rest: the ClickHouse insert, then its
    /// new behaviours into the search index, each retried until it
    /// succeeds; the write yields `false` if shutdown came first. `None`
    /// if shutdown came while dead-lettering.
    async fn prepare(
        &mut self,
        batch: &[OwnedMessage],
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send + 'a>>> {
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
                    if !dead_letter(self.producer, self.cfg, m, &reason, self.shutdown).await {
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
        let rows: Vec<EventRow> = scored.iter().map(EventRow::from_scored).collect();
        let (ch, health, shutdown) = (self.ch, self.health, self.shutdown);
        let (search, search_lock) = (self.search, self.search_lock);
        Some(Box::pin(async move {
            if rows.is_empty() {
                return true;
            }
            let mut delay = Duration::from_millis(100);
            loop {
                let t = Instant::now();
                match insert(ch, &rows).await {
                    Ok(()) => {
                        metrics::INSERT_SECONDS.observe(t.elapsed().as_secs_f64());
                        metrics::BATCH_ROWS.observe(rows.len() as f64);
                        metrics::ROWS
                            .with_label_values(&["inserted"])
                            .inc_by(rows.len() as u64);
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0);
                        for r in &rows {
                            metrics::LAG_SECONDS.observe(now.saturating_sub(r.ts_ns) as f64 / 1e9);
                        }
                        health.set("clickhouse", true, "inserts succeed");
                        break;
                    }
                    Err(e) => {
                        metrics::INSERT_ERRORS.inc();
                        health.set("clickhouse", false, e.to_string());
                        tracing::warn!(rows = rows.len(), error = %e, retry_in_ms = delay.as_millis() as u64, "clickhouse insert failed");
                    }
                }
                if !backoff(shutdown, &mut delay).await {
                    return false;
                }
            }
            if entries.is_empty() {
                return true;
            }
            let _one_writer = search_lock.lock().await;
            let mut delay = Duration::from_millis(100);
            loop {
                match index(search, health, &entries).await {
                    Ok(()) => return true,
                    Err(e) => {
                        health.set("lancedb", false, e.to_string());
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "search index write failed");
                    }
                }
                if !backoff(shutdown, &mut delay).await {
                    return false;
                }
            }
        }))
    }
}

/// Sleeps `delay` (doubling it, up to 30 s) unless shutdown comes first.
async fn backoff(shutdown: &CancellationToken, delay: &mut Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => return false,
        () = tokio::time::sleep(*delay) => {}
    }
    *delay = (*delay * 2).min(Duration::from_secs(30));
    true
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
    health.set("lancedb", true, "search index writes succeed");
    Ok(())
}

fn known_id(org: &str, workload: &str, key: u64) -> u64 {
    let mut buf = Vec::with_capacity(org.len() + 9);
    buf.extend_from_slice(org.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&search_index::row_id(workload, key).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

async fn insert(ch: &Client, rows: &[EventRow]) -> Result<(), clickhouse::error::Error> {
    let mut insert = ch.insert::<EventRow>(schema::TABLE).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

async fn dead_letter(
    producer: &FutureProducer,
    cfg: &IndexerConfig,
    m: &OwnedMessage,
    reason: &str,
    shutdown: &CancellationToken,
) -> bool {
    metrics::ROWS.with_label_values(&["deadletter"]).inc();
    tracing::warn!(
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        reason,
        "record sent to dead-letter topic"
    );
    let source = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
    let mut delay = Duration::from_millis(100);
    loop {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: DLQ_REASON_HEADER,
                value: Some(reason.as_bytes()),
            })
            .insert(Header {
                key: DLQ_SOURCE_HEADER,
                value: Some(source.as_bytes()),
            });
        let rec = FutureRecord::to(&cfg.kafka.topics.deadletter)
            .key(m.key().unwrap_or_default())
            .payload(m.payload().unwrap_or_default())
            .headers(headers);
        match producer.send(rec, Duration::from_secs(5)).await {
            Ok(_) => return true,
            Err((e, _)) => tracing::warn!(error = %e, "dead-letter delivery failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
