//! A small topic-to-table writer for the indexer's side tables (the
//! feedback audit, the hosts' heartbeats, the dead letters): each record of a topic becomes a
//! row of a ClickHouse table, at-least-once, in the indexer's own consumer
//! group.

use std::time::Duration;

use clickhouse::Client;
use outlier_common::kafka::{self, Assignment, KafkaConfig};
use outlier_common::retry::{Backoff, RetryPolicy};
use outlier_common::telemetry::{Check, Health};

use crate::metrics;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

/// Writes each record of `topic` as a row of `table`, at-least-once: a
/// batch's offsets are stored once its rows are in ClickHouse (retried
/// with backoff while it refuses them). Records `decode` rejects are logged
/// and counted under `invalid`; rows written under `written`.
#[allow(clippy::too_many_arguments)]
pub async fn run<T>(
    kafka_cfg: &KafkaConfig,
    topic: &str,
    group: &str,
    table: &str,
    decode: impl Fn(&OwnedMessage) -> Result<T, String>,
    counter: &outlier_common::telemetry::Counter<metrics::Written>,
    ch: &Client,
    health: &Health,
    shutdown: &CancellationToken,
) where
    T: clickhouse::RowOwned + clickhouse::RowWrite + Send + Sync,
{
    let consumer = match kafka::at_least_once_clients(
        kafka_cfg,
        "outlier-indexer-side",
        group,
        &[topic],
        Assignment::Sticky,
        health,
        shutdown,
    )
    .await
    {
        Ok(Some((c, _))) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(topic, error = %e, "consumer not created");
            health.set(Check::Kafka, false, format!("{topic}: {e}"));
            return;
        }
    };
    tracing::info!(topic, group, table, "writing the topic to ClickHouse");
    while let Some(batch) = kafka::next_batch(
        &consumer,
        kafka::BatchBound::SIDE,
        Duration::from_millis(100),
        shutdown,
    )
    .await
    {
        let offsets = kafka::batch_offsets(&batch);
        let mut rows = Vec::with_capacity(batch.len());
        for m in &batch {
            match decode(m) {
                Ok(r) => rows.push(r),
                Err(reason) => {
                    counter.inc(metrics::Written::Invalid);
                    tracing::warn!(
                        topic = m.topic(),
                        partition = m.partition(),
                        offset = m.offset(),
                        reason,
                        "record not written"
                    );
                }
            }
        }
        let mut backoff = Backoff::new(RetryPolicy {
            max_delay: Duration::from_secs(30),
            ..RetryPolicy::default()
        });
        while !rows.is_empty() {
            match insert(ch, table, &rows).await {
                Ok(()) => {
                    counter.inc_by(metrics::Written::Written, rows.len() as u64);
                    break;
                }
                Err(e) => {
                    health.set(Check::ClickHouse, false, format!("{table}: {e}"));
                    tracing::warn!(table, error = %e, "insert failed; retrying");
                }
            }
            if !backoff.wait(shutdown).await {
                // Unstored: the next start writes these again.
                kafka::commit_stored(&consumer);
                return;
            }
        }
        kafka::store_offsets(&consumer, &offsets);
    }
    kafka::commit_stored(&consumer);
}

async fn insert<T>(ch: &Client, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = ch.insert::<T>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}
