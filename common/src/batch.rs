//! The one pipelined batch loop of the scorer and the indexer's sink:
//! consume a micro-batch → hand it to a [`Stage`] → the stage's output for
//! it becomes durable → store the batch's offsets, oldest batch first. Up
//! to `max_inflight` batches are on their way at once, so processing the
//! next batch overlaps with waiting for the last one's output, and
//! at-least-once holds: an offset is stored only when its batch and every
//! batch before it are safe. Partitions revoked in a rebalance are handed
//! to the stage once every batch before the revocation is stored; periodic
//! work (flushes, retention) runs between batches.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use crate::kafka::{self, CommitOnRevoke, Offsets};

/// How batches are cut and how many may be on their way.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Most records in a batch.
    pub max_records: usize,
    /// Most bytes (keys and payloads) in a batch; a batch holds at least
    /// one record.
    pub max_bytes: usize,
    /// How long a batch waits for more records after its first.
    pub max_wait: Duration,
    /// Batches whose output may be pending at once (at least 1).
    pub max_inflight: usize,
}

/// A batch's output on its way: yields the batch's offsets once the output
/// is durable, `None` if shutdown came first (the offsets are then not
/// stored and the next owner redoes the batch).
pub type Pending = Pin<Box<dyn Future<Output = Option<Offsets>> + Send>>;

/// What a service does with its batches.
pub trait Stage {
    type Error;

    /// Periods of the stage's periodic work; [`Stage::tick`] gets the index
    /// of the one due. Each fires once at the start.
    fn periods(&self) -> Vec<Duration> {
        Vec::new()
    }

    /// Takes a batch and returns its pending output; `Ok(None)` when
    /// shutdown interrupted it (the loop ends without storing it), `Err` to
    /// end the loop with an error.
    fn batch(
        &mut self,
        batch: Vec<OwnedMessage>,
    ) -> impl Future<Output = Result<Option<Pending>, Self::Error>> + Send;

    /// Periodic work number `which` of [`Stage::periods`].
    fn tick(&mut self, which: usize) -> impl Future<Output = ()> + Send {
        let _ = which;
        async {}
    }

    /// Partitions taken away in a rebalance, after every earlier batch's
    /// offsets are stored.
    fn revoked(&mut self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }
}

/// Runs the loop until `shutdown` fires or the stage fails, then finishes
/// the batches in flight (storing their offsets in order; at shutdown one
/// still retrying is given up) and commits what was stored.
pub async fn run<S: Stage>(
    consumer: &StreamConsumer<CommitOnRevoke>,
    settings: Settings,
    stage: &mut S,
    shutdown: &CancellationToken,
) -> Result<(), S::Error> {
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let max_inflight = settings.max_inflight.max(1);
    let mut ticks: Vec<tokio::time::Interval> = stage
        .periods()
        .into_iter()
        .map(tokio::time::interval)
        .collect();
    let result = loop {
        let revoked = consumer.context().take_revoked();
        if !revoked.is_empty() {
            // What is in flight is stored first: its offsets are committed
            // before the revoked partitions' next owner starts.
            if !kafka::finish_in_order(&mut inflight, consumer).await {
                break Ok(());
            }
            stage.revoked(&revoked).await;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Some(offsets) => kafka::store_offsets(consumer, &offsets),
                None => break Ok(()), // shut down before it was safe
            },
            which = next_tick(&mut ticks), if !ticks.is_empty() => stage.tick(which).await,
            first = consumer.recv(), if inflight.len() < max_inflight => {
                let first = match first {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let bound = kafka::BatchBound { records: settings.max_records, bytes: settings.max_bytes };
                let batch = kafka::fill_batch(consumer, first, bound, settings.max_wait).await;
                match stage.batch(batch).await {
                    Ok(Some(pending)) => inflight.push_back(pending),
                    Ok(None) => break Ok(()), // shut down mid-batch: not stored
                    Err(e) => break Err(e),
                }
            }
        }
    };
    kafka::finish_in_order(&mut inflight, consumer).await;
    drop(inflight);
    kafka::commit_stored(consumer);
    result
}

/// The index of the first interval due.
async fn next_tick(ticks: &mut [tokio::time::Interval]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, t) in ticks.iter_mut().enumerate() {
            if t.poll_tick(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}
