//! Publishing an operator's verdict on an event (see [`crate::pipeline`]
//! for what the scorer does with it).

use std::time::Duration;

use outlier_common::kafka::{self, KafkaConfig};
use outlier_common::{json, now_ns};
use outlier_proto::{Event, Feedback, FeedbackLabel};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

/// Publishes feedback on `event` to the feedback topic, keyed like the
/// event so it reaches the scorer that owns the workload (the scorers read
/// the feedback topic co-partitioned with the events topics). Only
/// operators' and the indexer's Kafka principals may write that topic.
pub async fn publish(
    kafka: &KafkaConfig,
    event: Event,
    label: FeedbackLabel,
    actor: &str,
    note: &str,
) -> Result<(), KafkaError> {
    let fb = Feedback {
        event: Some(event),
        label: label as i32,
        actor: actor.to_string(),
        note: note.to_string(),
        ts_ns: now_ns(),
    };
    let producer: FutureProducer = kafka.producer_config("outlier-feedback").create()?;
    kafka::send_feedback(&producer, &kafka.topics, &fb, Duration::from_secs(30)).await
}

/// Parses the events of a JSON Lines v1 text, reporting bad lines.
pub fn parse_events(text: &str) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e = json::parse_line(line, now_ns(), String::new)
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(e);
    }
    Ok(out)
}
