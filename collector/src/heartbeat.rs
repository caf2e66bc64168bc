//! The collector's heartbeat: every `heartbeat_interval_s` it publishes an
//! `outlier.v1.Heartbeat` (version, capture mode, what it captured, lost and
//! holds unsent) on its events topic, marked by the record-kind header. It
//! goes straight to Kafka, not through the spool: a heartbeat says the host
//! reports *now*, and one that cannot be delivered is simply the next
//! missing beat. The scorers check its org and forward it; the indexer keeps
//! each host's latest (`outlier hosts --silent 5m`).

use std::time::Duration;

use outlier_common::kafka::{HEARTBEAT_KIND, KafkaConfig, RECORD_KIND_HEADER};
use outlier_common::now_ns;
use outlier_proto::Heartbeat;
use prometheus::IntCounterVec;
use prometheus::core::Collector as _;
use prost::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Who this collector is, for its heartbeats.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub org: String,
    pub host: String,
    pub capture_mode: String,
    pub started_ns: u64,
}

fn total(v: &IntCounterVec) -> u64 {
    v.collect()
        .iter()
        .flat_map(|mf| mf.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

impl Reporter {
    /// A heartbeat with this process's figures as of now.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            org: self.org.clone(),
            host: self.host.clone(),
            ts_ns: now_ns(),
            version: outlier_common::VERSION.to_string(),
            capture_mode: self.capture_mode.clone(),
            started_ns: self.started_ns,
            events_captured: total(&metrics::CAPTURED),
            kernel_drops: total(&metrics::KERNEL_DROPS),
            spool_dropped: metrics::SPOOL_DROPPED.get(),
            spool_backlog: u64::try_from(metrics::SPOOL_BACKLOG.get()).unwrap_or(0),
        }
    }
}

/// Publishes one heartbeat to `topic`.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    h: &Heartbeat,
) -> Result<(), KafkaError> {
    let (key, payload) = (h.partition_key(), h.encode_to_vec());
    let record =
        FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: RECORD_KIND_HEADER,
                value: Some(HEARTBEAT_KIND),
            }));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Beats every `interval` to `kafka.topics.events` until `shutdown`.
pub async fn run(
    kafka: KafkaConfig,
    reporter: Reporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let producer: FutureProducer = match kafka
        .producer_config("outlier-collector-heartbeat")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat producer not created; no heartbeats");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let h = reporter.heartbeat();
        // A delivery waits up to the producer's message timeout while Kafka
        // is unreachable: shutdown must not wait for it.
        let sent = tokio::select! {
            () = shutdown.cancelled() => return,
            r = publish(&producer, &kafka.topics.events, &h) => r,
        };
        match sent {
            Ok(()) => metrics::HEARTBEATS.inc(crate::metrics::HeartbeatOutcome::Sent),
            Err(e) => {
                metrics::HEARTBEATS.inc(crate::metrics::HeartbeatOutcome::Failed);
                tracing::warn!(error = %e, "heartbeat not delivered");
            }
        }
    }
}
