//! `collector run`: live capture on this host until SIGTERM.
//!
//! capture (eBPF ring buffer, or /proc polls) → events → spool → sender →
//! Kafka. Capture never waits for Kafka: the spool absorbs an outage (up to
//! its bound) and the sender drains it in order when Kafka returns.

use std::time::{Duration, Instant};

use outlier_common::names;
use outlier_common::telemetry::{self, Check, Health};
use outlier_proto::Event;
use prost::Message as _;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::capture::Builder;
use crate::config::{CollectorConfig, Mode};
use crate::ebpf::{self, Capture};
use crate::identity::{self, Resolver, RuleError};
use crate::metrics;
use crate::procfs::Scanner;
use crate::records::Raw;
use crate::sender;
use crate::spool::{Spool, SpoolError};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("eBPF capture requested but unavailable: {0}")]
    Ebpf(#[from] ebpf::LoadError),
    #[error("http endpoint: {0}")]
    Http(#[from] std::io::Error),
}

enum Source {
    Ebpf(Box<Capture>),
    Procfs(Box<Scanner>),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Ebpf(_) => "ebpf",
            Source::Procfs(_) => "procfs",
        }
    }

    /// Where in the kernel: `lsm`, `tracepoints`, or `none` for /proc.
    fn hooks(&self) -> &'static str {
        match self {
            Source::Ebpf(c) => c.hooks.name(),
            Source::Procfs(_) => "none",
        }
    }
}

fn choose(cfg: &CollectorConfig) -> Result<Source, RunError> {
    let procfs = || {
        let mut s = Scanner::new();
        let mut ignore = Vec::new();
        s.poll(&mut ignore); // learn what already runs
        Source::Procfs(Box::new(s))
    };
    match cfg.capture.mode {
        Mode::Procfs => Ok(procfs()),
        Mode::Ebpf => Ok(Source::Ebpf(Box::new(Capture::load(&cfg.capture)?))),
        Mode::Auto => match Capture::load(&cfg.capture) {
            Ok(c) => Ok(Source::Ebpf(Box::new(c))),
            Err(e) => {
                tracing::warn!(error = %e, "eBPF capture unavailable; using the /proc fallback");
                Ok(procfs())
            }
        },
    }
}

/// Runs live capture until `shutdown` fires; then gives the sender a few
/// seconds to deliver what the spool holds (the rest waits for the next
/// start).
///
/// `print` also writes every event to stdout as JSON Lines v1 (the replay
/// format), for a look at what is captured.
pub async fn run(
    mut cfg: CollectorConfig,
    print: bool,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    names::validate("identity.org", &cfg.identity.org)
        .map_err(|e| RunError::Config(e.to_string()))?;
    cfg.kafka.validate().map_err(RunError::Config)?;
    if cfg.kafka.org_topics {
        // This host's org has its own topic, writable only by its
        // collectors: events of other orgs cannot be published from here.
        cfg.kafka.topics.events = cfg
            .kafka
            .topics
            .events_for_org(&cfg.identity.org)
            .map_err(|e| RunError::Config(format!("identity.org: {e}")))?;
    }
    names::validate("workloads.default", &cfg.workloads.default)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let resolver = Resolver::new(&cfg.workloads)?;
    let host = identity::host_name(&cfg.identity);
    names::validate("identity.host", &host).map_err(|e| RunError::Config(e.to_string()))?;

    let health = Health::new(&[Check::Kafka, Check::Capture]);
    telemetry::serve_http(cfg.http_addr, health.clone(), shutdown.clone()).await?;
    let spool = Spool::open(&cfg.spool.dir, cfg.spool.max_bytes, cfg.spool.segment_bytes)?;
    if spool.backlog() > 0 {
        tracing::info!(
            events = spool.backlog(),
            "spool holds unsent events from an earlier run"
        );
    }

    let mut source = choose(&cfg)?;
    let mode = source.name();
    let hooks = source.hooks();
    health.set(
        Check::Capture,
        true,
        format!("{mode} capture running (hooks: {hooks})"),
    );
    metrics::CAPTURE_HOOKS
        .with_label_values(&[mode, hooks])
        .set(1);
    tracing::info!(
        mode,
        hooks,
        org = %cfg.identity.org,
        host = %host,
        default_workload = %cfg.workloads.default,
        spool = %cfg.spool.dir.display(),
        brokers = %cfg.kafka.brokers,
        topic = %cfg.kafka.topics.events,
        "collector running"
    );

    // The sender stops after the capture loop has spooled its last records.
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn(sender::run(
        spool.clone(),
        cfg.kafka.clone(),
        health.clone(),
        sender_stop.clone(),
        Duration::from_secs(5),
    ));

    let heartbeats = (cfg.heartbeat_interval_s > 0).then(|| {
        let reporter = crate::heartbeat::Reporter {
            org: cfg.identity.org.clone(),
            host: host.clone(),
            capture_mode: if hooks == "none" {
                mode.to_string()
            } else {
                format!("{mode}/{hooks}")
            },
            started_ns: outlier_common::now_ns(),
        };
        tokio::spawn(crate::heartbeat::run(
            cfg.kafka.clone(),
            reporter,
            Duration::from_secs(cfg.heartbeat_interval_s),
            sender_stop.clone(),
        ))
    });
    let mut builder = Builder::new(cfg.identity.org.clone(), host, mode, resolver);
    let default_workload = cfg.workloads.default.clone();
    let mut raws: Vec<Raw> = Vec::with_capacity(cfg.capture.batch_max);
    let mut events: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(cfg.capture.batch_max);
    let interval = Duration::from_millis(cfg.capture.proc_interval_ms.max(10));
    let batch_wait = Duration::from_millis(cfg.capture.batch_wait_ms.min(1000));
    let mut last_batch = 0;
    let mut last_drops = [0u64; 4];
    let mut drops_at = Instant::now();
    let mut malformed = 0;

    // On SIGTERM the ring buffer is drained once more, so what the kernel
    // captured before the signal is spooled (and delivered), not dropped.
    let mut stopping = false;
    loop {
        match &mut source {
            Source::Ebpf(c) => {
                // After a partial batch, let the ring fill a while before
                // the next read: one wake-up per batch, not per event.
                if last_batch > 0 && last_batch < cfg.capture.batch_max && !batch_wait.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(batch_wait) => {}
                        () = shutdown.cancelled() => stopping = true,
                    }
                }
                if stopping {
                    c.drain(&mut raws, usize::MAX);
                } else {
                    tokio::select! {
                        r = c.read(&mut raws, cfg.capture.batch_max, Duration::from_millis(200)) => {
                            if let Err(e) = r {
                                tracing::error!(error = %e, "ring buffer read failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        () = shutdown.cancelled() => {
                            stopping = true;
                            c.drain(&mut raws, usize::MAX);
                        }
                    }
                }
                last_batch = raws.len();
                if c.malformed > malformed {
                    metrics::MALFORMED.inc_by(c.malformed - malformed);
                    malformed = c.malformed;
                }
                if drops_at.elapsed() > Duration::from_secs(1) {
                    drops_at = Instant::now();
                    let now = c.kernel_drops();
                    for (i, (reason, n)) in now.iter().enumerate() {
                        let new = n.saturating_sub(last_drops[i]);
                        if new > 0 && *reason != "sendmsg_repeat" {
                            tracing::warn!(lost = new, reason, "kernel records lost");
                        }
                        metrics::KERNEL_DROPS
                            .with_label_values(&[reason])
                            .inc_by(new);
                        last_drops[i] = *n;
                    }
                }
            }
            Source::Procfs(s) => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => break,
                }
                // /proc walks are blocking work: off the reactor.
                let mut scanner = std::mem::take(s);
                let mut out = std::mem::take(&mut raws);
                let (scanner, out) = tokio::task::spawn_blocking(move || {
                    scanner.poll(&mut out);
                    (scanner, out)
                })
                .await
                .expect("procfs poll panicked");
                *s = scanner;
                raws = out;
            }
        }
        if raws.is_empty() {
            if stopping || shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        for raw in raws.drain(..) {
            let mut ev: Event = builder.build(&raw);
            if names::validate("workload", &ev.workload).is_err() {
                ev.workload.clone_from(&default_workload);
            }
            metrics::CAPTURED
                .with_label_values(&[ev.kind_name(), mode])
                .inc();
            if print {
                let line = serde_json::to_string(&outlier_common::json::from_event(&ev))
                    .unwrap_or_default();
                println!("{line}");
            }
            events.push((ev.partition_key().into_bytes(), ev.encode_to_vec()));
        }
        let res = spool.append(events.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        events.clear();
        if let Err(e) = res {
            // The disk is the only place events can wait; without it they
            // are lost, and we say so loudly.
            tracing::error!(error = %e, "spool write failed: events lost");
            health.set(Check::Capture, false, format!("spool write failed: {e}"));
        }
        if stopping || shutdown.is_cancelled() {
            break;
        }
    }

    tracing::info!("capture stopped; delivering what the spool holds");
    sender_stop.cancel();
    if sender.await.is_err() {
        tracing::error!("sender panicked");
    }
    if let Some(h) = heartbeats {
        let _ = h.await;
    }
    tracing::info!("collector stopped");
    Ok(())
}
