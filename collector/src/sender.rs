//! Publishes the spool to Kafka, in order, loss-free: records are read
//! from the spool, produced by an idempotent acks=all producer, and the
//! spool's cursor moves past a record only once Kafka acknowledged it and
//! every record before it. When a delivery fails (Kafka unreachable for
//! longer than the producer's message timeout), everything after the cursor
//! is sent again once Kafka answers; the spool meanwhile keeps what capture
//! produces. Duplicates that a resend may cause carry the same event id
//! and collapse downstream. A record Kafka refuses for itself (too large,
//! invalid) is skipped and counted (`outcome="refused"`) rather than resent
//! for ever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use outlier_common::kafka::KafkaConfig;
use outlier_common::retry::Failure;
use outlier_common::telemetry::{Check, Health};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::spool::{Position, Record, Spool};

/// Most records awaiting acknowledgement.
const WINDOW: usize = 20_000;
/// How long the producer keeps retrying one record before it reports a
/// failure (and the sender rewinds to the cursor).
const MESSAGE_TIMEOUT_MS: &str = "30000";

pub fn producer(kafka: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    let mut c = kafka.producer_config("outlier-collector");
    if !kafka.properties.contains_key("message.timeout.ms") {
        c.set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    }
    // Events arrive in batches (see `capture.batch_wait_ms`): wait a little
    // for the next so a quiet host sends few, larger requests.
    if !kafka.properties.contains_key("linger.ms") {
        c.set("linger.ms", "20");
    }
    c.create()
}

struct InFlight {
    seq: u64,
    end: Position,
    delivery: DeliveryFuture,
}

/// Sends until `shutdown` fires, then keeps sending what is in the spool
/// for at most `drain` (the rest stays in the spool for the next start).
pub async fn run(
    spool: Spool,
    kafka: KafkaConfig,
    health: Health,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut producer = match producer(&kafka) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the kafka producer");
            health.set(Check::Kafka, false, e.to_string());
            return;
        }
    };
    let topic = kafka.topics.events.clone();
    let mut reader = spool.reader();
    let mut pending: VecDeque<Record> = VecDeque::new();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut delay = Duration::from_millis(200);
    let mut last_sync = Instant::now();
    let mut deadline: Option<tokio::time::Instant> = None;

    loop {
        if deadline.is_none() && shutdown.is_cancelled() {
            deadline = Some(tokio::time::Instant::now() + drain);
        }
        if let Some(d) = deadline
            && (tokio::time::Instant::now() >= d
                || (inflight.is_empty() && pending.is_empty() && spool.backlog() == 0))
        {
            break;
        }
        // Queue what the window allows.
        let mut queue_full = false;
        while inflight.len() < WINDOW {
            if pending.is_empty() {
                match reader.read(WINDOW - inflight.len(), 8 << 20) {
                    Ok(recs) if recs.is_empty() => break,
                    Ok(recs) => pending.extend(recs),
                    Err(e) => {
                        tracing::error!(error = %e, "spool read failed");
                        break;
                    }
                }
            }
            let Some(r) = pending.front() else { break };
            let rec = FutureRecord::to(&topic).key(&r.key).payload(&r.value);
            match producer.send_result(rec) {
                Ok(delivery) => {
                    let r = pending.pop_front().expect("front exists");
                    inflight.push_back(InFlight {
                        seq: r.seq,
                        end: r.end,
                        delivery,
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    queue_full = true;
                    break;
                }
                Err((e, _)) => {
                    tracing::error!(error = %e, "cannot queue event");
                    queue_full = true;
                    break;
                }
            }
        }
        metrics::INFLIGHT.set(inflight.len() as i64);
        metrics::SPOOL_BACKLOG.set(spool.backlog() as i64);
        metrics::SPOOL_BYTES.set(spool.bytes() as i64);

        let Some(front) = inflight.front_mut() else {
            // Nothing in flight: wait for capture (or a poll tick).
            if last_sync.elapsed() > Duration::from_millis(200) {
                sync(&spool);
                last_sync = Instant::now();
            }
            let wait = if deadline.is_some() {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                () = spool.appended() => {}
                () = shutdown.cancelled(), if deadline.is_none() => {}
                () = tokio::time::sleep(if queue_full { Duration::from_millis(5) } else { wait }) => {}
            }
            continue;
        };
        let res = tokio::select! {
            r = &mut front.delivery => r,
            // Capture goes on while the oldest record waits for its
            // acknowledgement: queue what arrived and keep the gauges live
            // (during an outage the wait lasts the producer's timeout).
            () = spool.appended(), if deadline.is_none() => continue,
            () = tokio::time::sleep(Duration::from_millis(100)), if deadline.is_some() => continue,
            () = shutdown.cancelled(), if deadline.is_none() => continue,
        };
        let done = inflight.pop_front().expect("front exists");
        match res {
            Ok(Ok(_)) => {
                if let Err(e) = spool.ack(done.seq, done.end) {
                    tracing::error!(error = %e, "spool ack failed");
                }
                metrics::EVENTS.inc(crate::metrics::EventOutcome::Published);
                delay = Duration::from_millis(200);
                health.set(Check::Kafka, true, "events delivered");
                if last_sync.elapsed() > Duration::from_millis(200) {
                    sync(&spool);
                    last_sync = Instant::now();
                }
            }
            Ok(Err((e, _))) if outlier_common::kafka::failure(&e) == Failure::Poison => {
                // Kafka will never take this record (too large, invalid):
                // resending it would hold every later event behind it. It
                // is skipped, logged and counted; the cursor moves on.
                metrics::EVENTS.inc(crate::metrics::EventOutcome::Refused);
                tracing::error!(error = %e, "kafka refused an event for itself; skipped");
                if let Err(e) = spool.ack(done.seq, done.end) {
                    tracing::error!(error = %e, "spool ack failed");
                }
            }
            failure => {
                let error = match failure {
                    Ok(Err((e, _))) => e.to_string(),
                    _ => "producer dropped the record".to_string(),
                };
                metrics::PUBLISH_FAILURES.inc();
                health.set(Check::Kafka, false, error.clone());
                tracing::warn!(
                    error = %error,
                    backlog = spool.backlog(),
                    retry_in_ms = delay.as_millis() as u64,
                    "kafka did not acknowledge; events stay in the spool and are sent again"
                );
                // Let everything in flight settle, then resend from the cursor.
                for f in inflight.drain(..) {
                    if let Ok(Ok(_)) = f.delivery.await {
                        // Acknowledged after an earlier record failed: it is
                        // sent again (in order) and collapses downstream.
                    }
                }
                pending.clear();
                reader.rewind();
                if producer.client().fatal_error().is_some() {
                    tracing::warn!("producer hit a fatal error; creating a new one");
                    match self::producer(&kafka) {
                        Ok(p) => producer = p,
                        Err(e) => tracing::error!(error = %e, "cannot create the kafka producer"),
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled(), if deadline.is_none() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(1));
    sync(&spool);
    let left = spool.backlog();
    if left > 0 {
        tracing::warn!(
            events = left,
            "stopping with unsent events; they are sent at the next start"
        );
    }
}

fn sync(spool: &Spool) {
    if let Err(e) = spool.sync_cursor() {
        tracing::error!(error = %e, "spool cursor not saved");
    }
}
