//! `collector replay`: publishes JSON Lines v1 events from a file or stdin
//! exactly as live capture would. A malformed line is reported with its line
//! number and skipped; it never stops the replay.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use outlier_common::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::metrics::EVENTS;
use crate::publish::Publisher;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines that were not valid v1 events (skipped).
    pub invalid: u64,
    /// Events Kafka acknowledged.
    pub published: u64,
    /// Events Kafka did not acknowledge.
    pub failed: u64,
}

/// Most records awaiting acknowledgement at once.
const MAX_IN_FLIGHT: usize = 50_000;

pub async fn replay<R: AsyncBufRead + Unpin>(
    mut input: R,
    publisher: &Publisher,
) -> std::io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut pending = FuturesUnordered::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        line_no += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(e) => {
                stats.lines += 1;
                stats.invalid += 1;
                EVENTS.inc(crate::metrics::EventOutcome::Invalid);
                tracing::warn!(line = line_no, error = %e, "skipping line that is not UTF-8");
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        stats.lines += 1;
        let now_ns = outlier_common::now_ns();
        match json::parse_line(text, now_ns, || uuid::Uuid::now_v7().to_string()) {
            Ok(event) => match publisher.send(&event).await {
                Ok(fut) => pending.push(fut),
                Err(e) => {
                    stats.failed += 1;
                    EVENTS.inc(crate::metrics::EventOutcome::Failed);
                    tracing::error!(line = line_no, error = %e, "could not queue event");
                }
            },
            Err(e) => {
                stats.invalid += 1;
                EVENTS.inc(crate::metrics::EventOutcome::Invalid);
                tracing::warn!(line = line_no, error = %e, "skipping malformed line");
            }
        }
        while pending.len() >= MAX_IN_FLIGHT {
            if let Some(res) = pending.next().await {
                account(&mut stats, res);
            }
        }
    }
    while let Some(res) = pending.next().await {
        account(&mut stats, res);
    }
    Ok(stats)
}

fn account(
    stats: &mut ReplayStats,
    res: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) {
    match res {
        Ok(Ok(_)) => {
            stats.published += 1;
            EVENTS.inc(crate::metrics::EventOutcome::Published);
        }
        Ok(Err((e, _))) => {
            stats.failed += 1;
            EVENTS.inc(crate::metrics::EventOutcome::Failed);
            tracing::error!(error = %e, "kafka did not acknowledge an event");
        }
        Err(_) => {
            stats.failed += 1;
            EVENTS.inc(crate::metrics::EventOutcome::Failed);
            tracing::error!("producer dropped an event before delivery");
        }
    }
}
