//! Publishing a batch's records: every record is queued, then awaited;
//! failures are re-sent with backoff, and a record Kafka refuses for itself
//! is replaced by a truncated copy on the dead-letter topic, so no record
//! holds its partition.

use std::time::Duration;

use futures::future::join_all;
use outlier_common::kafka::{self, DeadLetterCopy};
use outlier_common::retry::Failure;
use outlier_common::telemetry::{Check, Health};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// A record to publish: scored events, alerts and dead letters.
pub(crate) struct OutRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

impl OutRecord {
    pub fn dead_letter(topic: &str, copy: DeadLetterCopy) -> Self {
        Self {
            topic: topic.to_string(),
            key: copy.key,
            payload: copy.payload,
            headers: Some(copy.headers),
        }
    }
}

/// Sends records and waits until Kafka has acknowledged all of them,
/// re-sending failures with backoff. `false` if shutdown came first. A
/// record the broker refuses for itself (too large, invalid) is poison: it
/// is replaced by a truncated copy on the dead-letter topic with the
/// reason, and a dead-letter copy that is refused too is dropped and
/// counted, so no record holds its partition.
pub(crate) async fn deliver(
    producer: &FutureProducer,
    health: &Health,
    shutdown: &CancellationToken,
    mut records: Vec<OutRecord>,
    deadletter_topic: &str,
) -> bool {
    let mut todo: Vec<usize> = (0..records.len()).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        let mut futures: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(todo.len());
        let mut failed = Vec::new();
        let mut poison = Vec::new();
        for &i in &todo {
            let OutRecord {
                topic,
                key,
                payload,
                headers,
            } = &records[i];
            loop {
                let mut rec = FutureRecord::to(topic).key(key).payload(payload);
                if let Some(h) = headers {
                    rec = rec.headers(h.clone());
                }
                match producer.send_result(rec) {
                    Ok(f) => {
                        futures.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        tracing::error!(topic = %topic, error = %e, "cannot queue record");
                        if kafka::failure(&e) == Failure::Poison {
                            poison.push((i, e.to_string()));
                        } else {
                            failed.push(i);
                        }
                        break;
                    }
                }
            }
        }
        let (idx, futs): (Vec<usize>, Vec<DeliveryFuture>) = futures.into_iter().unzip();
        for (i, res) in idx.into_iter().zip(join_all(futs).await) {
            match res {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    tracing::warn!(error = %e, "delivery failed");
                    if kafka::failure(&e) == Failure::Poison {
                        poison.push((i, e.to_string()));
                    } else {
                        failed.push(i);
                    }
                }
                Err(_) => failed.push(i),
            }
        }
        for (i, reason) in poison {
            let r = &records[i];
            let subject = format!("{} ({} bytes)", r.topic, r.payload.len());
            let stage = metrics::PoisonStage::Produce;
            if r.topic == deadletter_topic {
                metrics::poisoned(
                    stage,
                    &subject,
                    &reason,
                    "dead-letter copy refused by Kafka; dropped",
                );
                continue;
            }
            metrics::poisoned(
                stage,
                &subject,
                &reason,
                "record refused by Kafka; sent truncated to the dead-letter topic",
            );
            let reason = format!("refused by Kafka on {}: {reason}", r.topic);
            let copy = DeadLetterCopy::new(&r.key, &r.payload, &reason, &r.topic);
            records[i] = OutRecord::dead_letter(deadletter_topic, copy);
            failed.push(i);
        }
        if failed.is_empty() {
            return true;
        }
        metrics::PRODUCE_RETRIES.inc_by(failed.len() as u64);
        health.set(
            Check::Kafka,
            false,
            format!("{} records not acknowledged", failed.len()),
        );
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
        todo = failed;
    }
}
