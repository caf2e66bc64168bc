//! A push output for SIEMs and tools without a Kafka connector: every
//! alert's OCSF Detection Finding POSTed, in batches, to an HTTP(S) webhook
//! (`webhook.url`), as a JSON array, with a bearer token if one is set.
//!
//! At-least-once: the alerts' offsets are stored once the receiver answered
//! 2xx. A receiver that is down or answers 5xx, 408 or 429 is retried with
//! backoff (health check `webhook` down meanwhile), nothing skipped. A batch
//! the receiver keeps refusing (another 4xx) for `poison_budget_s` is
//! dead-lettered with the receiver's answer and the output moves on.

use std::time::{Duration, Instant};

use outlier_common::kafka::{self, Assignment, KafkaConfig};
use outlier_common::retry::{Backoff, RetryPolicy};
use outlier_common::telemetry::{Check, Health};
use outlier_proto::{ScoredEvent, Verdict};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// The webhook output (off while `url` is empty).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where to POST findings (`https://…`; `http://` only to loopback).
    pub url: String,
    /// File holding a bearer token sent as `Authorization: Bearer …`.
    pub token_file: String,
    /// Findings per POST, at most.
    pub max_batch: usize,
    /// Time allowed for one POST.
    pub timeout_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token_file: String::new(),
            max_batch: 500,
            timeout_ms: 10_000,
        }
    }
}

impl WebhookConfig {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Ok(());
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("webhook.url `{}`: {e}", self.url))?;
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(format!(
                    "webhook.url `{}`: plain http only to a loopback address; use https",
                    self.url
                ));
            }
            s => return Err(format!("webhook.url: scheme `{s}` (https or http)")),
        }
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(format!(
                "webhook.max_batch = {}: 1 to 10000",
                self.max_batch
            ));
        }
        if self.timeout_ms == 0 {
            return Err("webhook.timeout_ms must be above 0".into());
        }
        if !self.token_file.is_empty() {
            outlier_common::config::read_secret_file("webhook.token_file", &self.token_file)?;
        }
        Ok(())
    }
}

/// How a POST went.
enum Posted {
    Ok,
    /// Worth retrying: the receiver is down, slow or busy.
    Retry(String),
    /// The receiver refuses this batch.
    Refused(String),
}

async fn post(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    token: &Option<String>,
    body: Vec<u8>,
) -> Posted {
    let mut req = client
        .post(&cfg.url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Posted::Ok,
        Ok(r) => {
            let status = r.status();
            let text: String = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            let why = format!("{status}: {text}");
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                Posted::Retry(why)
            } else {
                Posted::Refused(why)
            }
        }
        Err(e) => Posted::Retry(e.to_string()),
    }
}

/// POSTs every alert's OCSF finding to the webhook until `shutdown` fires.
pub async fn run(
    kafka_cfg: KafkaConfig,
    group: String,
    cfg: WebhookConfig,
    poison_budget: Duration,
    health: Health,
    shutdown: CancellationToken,
) {
    let token = match cfg.token_file.as_str() {
        "" => None,
        f => match outlier_common::config::read_secret_file("webhook.token_file", f) {
            Ok(t) => Some(t),
            Err(e) => {
                health.set(Check::Webhook, false, e);
                return;
            }
        },
    };
    crate::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            health.set(Check::Webhook, false, format!("http client: {e}"));
            return;
        }
    };
    let source = kafka_cfg.topics.alerts.clone();
    let (consumer, producer): (_, FutureProducer) = match kafka::at_least_once_clients(
        &kafka_cfg,
        "outlier-indexer-webhook",
        &group,
        &[&source],
        Assignment::Sticky,
        &health,
        &shutdown,
    )
    .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            health.set(Check::Kafka, false, format!("{source}: {e}"));
            return;
        }
    };
    health.set(
        Check::Webhook,
        true,
        format!("posting findings to {}", cfg.url),
    );
    tracing::info!(url = %cfg.url, group, "posting OCSF findings to the webhook");
    let bound = kafka::BatchBound {
        records: cfg.max_batch,
        ..kafka::BatchBound::SIDE
    };
    while let Some(batch) =
        kafka::next_batch(&consumer, bound, Duration::from_millis(200), &shutdown).await
    {
        let offsets = kafka::batch_offsets(&batch);
        let findings: Vec<(serde_json::Value, &OwnedMessage)> = batch
            .iter()
            .filter_map(|m| {
                let s = ScoredEvent::decode(m.payload()?).ok()?;
                matches!(s.verdict(), Verdict::Warn | Verdict::Alert)
                    .then(|| (crate::ocsf::finding_of(&s), m))
            })
            .collect();
        if !findings.is_empty() {
            let body = serde_json::to_vec(&findings.iter().map(|(f, _)| f).collect::<Vec<_>>())
                .unwrap_or_default();
            let mut backoff = Backoff::new(RetryPolicy {
                max_delay: Duration::from_secs(30),
                ..RetryPolicy::default()
            });
            let mut refused_since: Option<Instant> = None;
            loop {
                match post(&client, &cfg, &token, body.clone()).await {
                    Posted::Ok => {
                        metrics::WEBHOOK
                            .inc_by(metrics::WebhookOutcome::Posted, findings.len() as u64);
                        health.set(
                            Check::Webhook,
                            true,
                            format!("posting findings to {}", cfg.url),
                        );
                        break;
                    }
                    Posted::Retry(why) => {
                        refused_since = None;
                        metrics::WEBHOOK.inc(metrics::WebhookOutcome::Retried);
                        health.set(Check::Webhook, false, format!("{}: {why}", cfg.url));
                        tracing::warn!(url = %cfg.url, why, "webhook not reached; retrying");
                    }
                    Posted::Refused(why) => {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= poison_budget {
                            tracing::error!(url = %cfg.url, why, findings = findings.len(), "webhook refuses the batch; dead-lettered");
                            dead_letter(&producer, &kafka_cfg, &findings, &why, &shutdown).await;
                            metrics::WEBHOOK
                                .inc_by(metrics::WebhookOutcome::DeadLetter, findings.len() as u64);
                            break;
                        }
                        metrics::WEBHOOK.inc(metrics::WebhookOutcome::Retried);
                        tracing::warn!(url = %cfg.url, why, "webhook refused the batch; retrying until the poison budget");
                    }
                }
                if !backoff.wait(&shutdown).await {
                    kafka::commit_stored(&consumer);
                    return;
                }
            }
        }
        kafka::store_offsets(&consumer, &offsets);
    }
    kafka::commit_stored(&consumer);
}

async fn dead_letter(
    producer: &FutureProducer,
    kafka_cfg: &KafkaConfig,
    findings: &[(serde_json::Value, &OwnedMessage)],
    why: &str,
    shutdown: &CancellationToken,
) {
    let reason = format!("webhook refused the batch: {why}");
    for (_, m) in findings {
        let copy = kafka::DeadLetterCopy::of(*m, &reason);
        if !kafka::send_dead_letter(producer, &kafka_cfg.topics.deadletter, &copy, shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_name_the_key() {
        let ok = |u: &str| {
            WebhookConfig {
                url: u.into(),
                ..WebhookConfig::default()
            }
            .validate()
        };
        assert!(ok("").is_ok(), "off");
        assert!(ok("https://siem.example/hook").is_ok());
        assert!(ok("http://127.0.0.1:8080/hook").is_ok());
        assert!(ok("http://localhost:8080/hook").is_ok());
        assert!(
            ok("http://siem.example/hook")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(ok("ftp://x/y").unwrap_err().starts_with("webhook.url"));
        assert!(ok("not a url").unwrap_err().starts_with("webhook.url"));
        let mut c = WebhookConfig {
            url: "https://x/y".into(),
            max_batch: 0,
            ..WebhookConfig::default()
        };
        assert!(c.validate().unwrap_err().starts_with("webhook.max_batch"));
        c.max_batch = 10;
        c.token_file = "/nonexistent/token".into();
        assert!(c.validate().unwrap_err().contains("webhook.token_file"));
    }
}
