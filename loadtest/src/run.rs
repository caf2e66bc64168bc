//! The load run: publishes simulated fleet telemetry to a running stack at a
//! target rate, follows it through the scored topic and into ClickHouse, and
//! measures what a deployment needs to know: sustained throughput,
//! end-to-end latency, loss, and detection of the injected attacks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use outlier_common::json;
use outlier_common::kafka::KafkaConfig;
use outlier_common::now_ns;
use outlier_proto::Verdict;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::sim::{Corpus, Label, SimConfig, Simulator};

/// Load-run settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub kafka: KafkaConfig,
    pub clickhouse_url: String,
    pub clickhouse_db: String,
    pub rate: u64,
    /// How long to produce, warm-up included.
    pub duration: Duration,
    /// Detection is measured on events produced after this much time (the
    /// workloads learn their baselines first).
    pub warmup: Duration,
    pub sim: SimConfig,
    /// Wait this long at most, after producing, for everything to arrive.
    pub drain: Duration,
    /// Show progress bars.
    pub progress: bool,
}

/// What was produced for one event.
#[derive(Debug, Clone, Copy)]
struct Produced {
    at_ns: u64,
    label: u32,
}

/// What the scorer said of one event.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub scored_ms_after: f64,
    pub score: f32,
    pub verdict: Verdict,
}

/// Results of a load run.
#[derive(Debug, Default)]
pub struct RunResult {
    pub produced: u64,
    pub produce_secs: f64,
    /// Seconds at the start excluded from the detection and latency figures.
    pub warmup_secs: f64,
    pub scored_unique: u64,
    pub scored_duplicates: u64,
    pub rows_in_clickhouse: u64,
    /// produced → scored on Kafka, ms, with the produce time offset (s).
    pub scored_latency: Vec<(f64, f64)>,
    /// produced → queryable in ClickHouse, ms (sampled), with offset (s).
    pub queryable_latency: Vec<(f64, f64)>,
    /// Events produced and scored per second of the run.
    pub produced_per_sec: Vec<u64>,
    pub scored_per_sec: Vec<u64>,
    pub labels: Vec<Label>,
    /// Per event (after warm-up): label index and what the scorer said.
    pub outcomes: Vec<(u32, Option<Seen>)>,
    pub org: String,
    /// Events flagged (warn or alert) over the whole run, warm-up included.
    pub flagged: u64,
    /// How the indexer grouped the run's flagged events into incidents.
    pub incidents: IncidentStats,
    /// Simulated hosts (for incidents per host-hour).
    pub hosts: usize,
}

/// The run's incidents (ClickHouse `incidents`), once grouping settled.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize, clickhouse::Row)]
pub struct IncidentStats {
    /// Incidents, flagged events in them, and incidents with an alert.
    pub incidents: u64,
    pub events: u64,
    pub with_alert: u64,
}

/// The org's incident figures, read until two reads 2 s apart agree (the
/// indexer groups alerts from their own topic, a little behind the rows).
async fn incident_stats(ch: &clickhouse::Client, org: &str) -> IncidentStats {
    let read = || async {
        ch.query(
            "SELECT count() AS incidents, sum(event_count) AS events, countIf(verdict = 3) AS with_alert FROM incidents FINAL WHERE org = ?",
        )
        .bind(org)
        .fetch_one::<IncidentStats>()
        .await
        .unwrap_or_default()
    };
    let mut last = read().await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = read().await;
        if now.events == last.events && now.incidents == last.incidents {
            return now;
        }
        last = now;
    }
    last
}

fn seq_of(prefix: &str, id: &str) -> Option<usize> {
    id.strip_prefix(prefix)?
        .strip_prefix('-')?
        .parse::<usize>()
        .ok()
        .map(|s| s - 1)
}

/// Runs the load test. The stack (Kafka, scorer, indexer, ClickHouse) must be up.
pub async fn run(cfg: RunConfig, corpus: Arc<Corpus>) -> anyhow::Result<RunResult> {
    let org = cfg.sim.org.clone();
    let prefix = cfg.sim.id_prefix.clone();
    let total_target = cfg.rate * cfg.duration.as_secs();
    let produced: Arc<Mutex<Vec<Produced>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total_target as usize + 1024)));
    let seen: Arc<Mutex<HashMap<usize, (Seen, u32)>>> = Arc::new(Mutex::new(HashMap::new()));
    let scored_count = Arc::new(AtomicU64::new(0));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let t0_ns = now_ns();

    // The scored topic, from its current end.
    let consumer: StreamConsumer = cfg
        .kafka
        .consumer_config(
            "outlier-loadtest",
            &format!("loadtest-{}", uuid::Uuid::now_v7()),
        )
        .create()?;
    let md = consumer.fetch_metadata(Some(&cfg.kafka.topics.scored), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let parts: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    for p in parts {
        let (_, high) =
            consumer.fetch_watermarks(&cfg.kafka.topics.scored, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(&cfg.kafka.topics.scored, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    let scored_task = {
        let (seen, produced, scored_count, stop, org, prefix) = (
            seen.clone(),
            produced.clone(),
            scored_count.clone(),
            stop_consumers.clone(),
            org.clone(),
            prefix.clone(),
        );
        tokio::spawn(async move {
            let mut dups = 0u64;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let msg =
                    match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                        Ok(Ok(m)) => m,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "scored topic");
                            continue;
                        }
                        Err(_) => continue,
                    };
                let Some(Ok(s)) = msg.payload().map(ScoredLite::decode) else {
                    continue;
                };
                let Some(e) = &s.event else { continue };
                if e.org != org {
                    continue;
                }
                let Some(seq) = seq_of(&prefix, &e.event_id) else {
                    continue;
                };
                let at_ms = msg.timestamp().to_millis().unwrap_or(0) as f64;
                let p = produced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(seq)
                    .copied();
                let Some(p) = p else { continue };
                let after = at_ms - p.at_ns as f64 / 1e6;
                let entry = Seen {
                    scored_ms_after: after,
                    score: s.anomaly_score,
                    verdict: s.verdict(),
                };
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.insert(seq, (entry, p.label)).is_some() {
                    dups += 1;
                } else {
                    lat.push(((p.at_ns - t0_ns) as f64 / 1e9, after));
                    scored_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            (dups, lat)
        })
    };

    // ClickHouse: how long until sampled events are queryable.
    let ch = clickhouse::Client::default()
        .with_url(&cfg.clickhouse_url)
        .with_database(&cfg.clickhouse_db)
        .with_validation(false);
    let watch: Arc<Mutex<VecDeque<(String, u64)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let ch_task = {
        let (ch, watch, stop, org) = (
            ch.clone(),
            watch.clone(),
            stop_consumers.clone(),
            org.clone(),
        );
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut pending: HashMap<String, u64> = HashMap::new();
            while !stop.load(Ordering::Relaxed) || !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                pending.extend(watch.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
                if pending.is_empty() {
                    continue;
                }
                // Probe the samples of the oldest seconds, one second per
                // query: events carry their produce time as timestamp, and
                // with `org`, `ts` and `event_id IN (…)` fixed ClickHouse
                // reads only the granules holding those ids (the key is
                // (org, ts, event_id)). A range of seconds with `has` read
                // ~200k rows per probe, and made the probe a large share of
                // the server's load under test.
                let secs = |ns: u64| u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX);
                let mut by_sec: BTreeMap<u32, Vec<String>> = BTreeMap::new();
                for (id, at) in &pending {
                    by_sec.entry(secs(*at)).or_default().push(id.clone());
                }
                let mut found: Vec<String> = Vec::new();
                for (sec, ids) in by_sec.into_iter().take(4) {
                    let ids = &ids[..ids.len().min(256)];
                    let slots = vec!["?"; ids.len()].join(", ");
                    let sql = format!(
                        "SELECT event_id FROM security_events \
                         WHERE org = ? AND ts = toDateTime(?) AND event_id IN ({slots})"
                    );
                    let mut q = ch.query(&sql).bind(&org).bind(sec);
                    for id in ids {
                        q = q.bind(id.as_str());
                    }
                    match q.fetch_all::<IdRow>().await {
                        Ok(rows) => found.extend(rows.into_iter().map(|r| r.event_id)),
                        Err(e) => {
                            tracing::warn!(error = %e, "clickhouse probe");
                            break;
                        }
                    }
                }
                let now = now_ns();
                for id in found {
                    if let Some(at) = pending.remove(&id) {
                        lat.push(((at - t0_ns) as f64 / 1e9, (now - at) as f64 / 1e6));
                    }
                }
                if stop.load(Ordering::Relaxed)
                    && pending.values().all(|at| now - at > 120_000_000_000)
                {
                    break;
                }
            }
            lat
        })
    };

    // Produce at the target rate, in 10 ms ticks.
    let producer: FutureProducer = cfg.kafka.producer_config("outlier-loadtest").create()?;
    let mut sim = Simulator::new(cfg.sim.clone(), corpus);
    let mut labels: Vec<Label> = Vec::new();
    let mut label_ids: HashMap<String, u32> = HashMap::new();
    let mut pending = FuturesUnordered::new();
    let mut failed = 0u64;
    let per_tick = (cfg.rate as f64 / 100.0).max(1.0);
    let mut budget = 0.0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let bar = if cfg.progress {
        Some(progress_bars(total_target))
    } else {
        None
    };
    let mut n = 0u64;
    while t0.elapsed() < cfg.duration {
        tick.tick().await;
        budget += per_tick;
        while budget >= 1.0 {
            budget -= 1.0;
            let le = sim.next().expect("the simulator never ends");
            let key = serde_json::to_string(&le.label).unwrap_or_default();
            let next_id = labels.len() as u32;
            let label = *label_ids.entry(key).or_insert_with(|| {
                labels.push(le.label.clone());
                next_id
            });
            let at = now_ns();
            let mut je = le.event;
            je.ts_ns = Some(at);
            let event = json::to_event(je, at, || unreachable!())?;
            let payload = event.encode_to_vec();
            let key = event.partition_key();
            let seq = {
                let mut p = produced.lock().unwrap_or_else(|p| p.into_inner());
                p.push(Produced { at_ns: at, label });
                p.len()
            };
            if seq % 500 == 0 {
                watch
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((event.event_id.clone(), at));
            }
            loop {
                match producer.send_result(
                    FutureRecord::to(&cfg.kafka.topics.events)
                        .key(&key)
                        .payload(&payload),
                ) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            n += 1;
        }
        while let Some(Some(r)) = futures::FutureExt::now_or_never(pending.next()) {
            if !matches!(r, Ok(Ok(_))) {
                failed += 1;
            }
        }
        if let Some((pb, sb)) = &bar {
            pb.set_position(n);
            sb.set_position(scored_count.load(Ordering::Relaxed));
        }
    }
    let produce_secs = t0.elapsed().as_secs_f64();
    while let Some(r) = pending.next().await {
        if !matches!(r, Ok(Ok(_))) {
            failed += 1;
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} events were not acknowledged by Kafka"
    );

    // Drain: wait for every event to be scored and stored.
    let deadline = Instant::now() + cfg.drain;
    let mut rows = 0u64;
    while Instant::now() < deadline {
        let scored = scored_count.load(Ordering::Relaxed);
        if let Some((_, sb)) = &bar {
            sb.set_position(scored);
        }
        if scored >= n {
            rows = count_rows(&ch, &org).await.unwrap_or(0);
            if rows >= n {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if rows < n {
        rows = count_rows(&ch, &org).await.unwrap_or(0);
    }
    stop_consumers.store(true, Ordering::Relaxed);
    let incidents = incident_stats(&ch, &org).await;
    let (dups, scored_latency) = scored_task.await?;
    let queryable_latency = ch_task.await?;
    if let Some((pb, sb)) = bar {
        pb.finish();
        sb.finish();
    }

    let produced = std::mem::take(&mut *produced.lock().unwrap_or_else(|p| p.into_inner()));
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let secs = produce_secs.ceil() as usize + 1;
    let mut produced_per_sec = vec![0u64; secs];
    for p in &produced {
        produced_per_sec[(((p.at_ns - t0_ns) / 1_000_000_000) as usize).min(secs - 1)] += 1;
    }
    let mut scored_per_sec: BTreeMap<usize, u64> = BTreeMap::new();
    for (seq, (s, _)) in &seen {
        let at = produced[*seq].at_ns as f64 / 1e9 + s.scored_ms_after / 1e3 - t0_ns as f64 / 1e9;
        *scored_per_sec.entry(at.max(0.0) as usize).or_default() += 1;
    }
    let last = scored_per_sec.keys().last().copied().unwrap_or(0);
    let scored_per_sec = (0..=last)
        .map(|s| scored_per_sec.get(&s).copied().unwrap_or(0))
        .collect();
    let warm_ns = t0_ns + cfg.warmup.as_nanos() as u64;
    let outcomes = produced
        .iter()
        .enumerate()
        .filter(|(_, p)| p.at_ns >= warm_ns)
        .map(|(seq, p)| (p.label, seen.get(&seq).map(|s| s.0)))
        .collect();
    Ok(RunResult {
        produced: n,
        produce_secs,
        warmup_secs: cfg.warmup.as_secs_f64(),
        scored_unique: seen.len() as u64,
        scored_duplicates: dups,
        rows_in_clickhouse: rows,
        scored_latency,
        queryable_latency,
        produced_per_sec,
        scored_per_sec,
        labels,
        outcomes,
        org,
        flagged: seen
            .values()
            .filter(|s| matches!(s.0.verdict, Verdict::Warn | Verdict::Alert))
            .count() as u64,
        incidents,
        hosts: cfg.sim.hosts,
    })
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct IdRow {
    event_id: String,
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct CountRow {
    n: u64,
}

async fn count_rows(ch: &clickhouse::Client, org: &str) -> Result<u64, clickhouse::error::Error> {
    let r: CountRow = ch
        .query("SELECT uniqExact(event_id) AS n FROM security_events WHERE org = ?")
        .bind(org)
        .fetch_one()
        .await?;
    Ok(r.n)
}

fn progress_bars(total: u64) -> (indicatif::ProgressBar, indicatif::ProgressBar) {
    let m = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>9} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let p = m.add(
        indicatif::ProgressBar::new(total)
            .with_style(style.clone())
            .with_prefix("produced"),
    );
    let s = m.add(
        indicatif::ProgressBar::new(total)
            .with_style(style)
            .with_prefix("scored"),
    );
    (p, s)
}

/// The fields of an `outlier.v1.ScoredEvent` the measurement reads (tags as
/// in scored.proto / events.proto). Decoding only these skips the rest of
/// each record (argv, explanation, contributions) without allocating: the
/// load generator must not load the machine it measures more than it must.
#[derive(Clone, PartialEq, prost::Message)]
struct ScoredLite {
    #[prost(message, optional, tag = "1")]
    event: Option<EventLite>,
    #[prost(float, tag = "2")]
    anomaly_score: f32,
    #[prost(enumeration = "Verdict", tag = "8")]
    verdict: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventLite {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(string, tag = "2")]
    org: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::{Contribution, Event, ScoredEvent};

    #[test]
    fn the_lite_decode_reads_what_the_full_one_does() {
        let full = ScoredEvent {
            event: Some(Event {
                event_id: "lt-1-42".into(),
                org: "acme".into(),
                workload: "web".into(),
                comm: "bash".into(),
                ..Event::default()
            }),
            anomaly_score: 0.75,
            verdict: Verdict::Warn as i32,
            explanation: "unlike all 12 known behaviours".into(),
            contributions: vec![Contribution {
                feature: "f".into(),
                ..Contribution::default()
            }],
            ..ScoredEvent::default()
        };
        let lite = ScoredLite::decode(full.encode_to_vec().as_slice()).unwrap();
        let e = lite.event.as_ref().unwrap();
        assert_eq!((e.event_id.as_str(), e.org.as_str()), ("lt-1-42", "acme"));
        assert_eq!(lite.anomaly_score, 0.75);
        assert_eq!(lite.verdict(), Verdict::Warn);
    }
}
