//! Self-observability shared by every long-running binary: structured logs,
//! a `/metrics` endpoint in the Prometheus text format, `/health` reporting
//! each dependency, and a shutdown token fired by SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Sets up `tracing`. `OUTLIER_LOG` filters (default `info`);
/// `OUTLIER_LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("OUTLIER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,lance=warn,lancedb=warn"));
    let json = std::env::var("OUTLIER_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let res = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = res;
}

/// A cancellation token that fires on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        t.cancel();
    });
    token
}

#[derive(Debug, Clone, Serialize)]
struct CheckState {
    ok: bool,
    detail: String,
    since_unix_s: u64,
}

/// Each health check as a metric (1 ok, 0 failing), for alerting on a
/// dependency that stays down.
static HEALTH_CHECK: std::sync::LazyLock<prometheus::IntGaugeVec> =
    std::sync::LazyLock::new(|| {
        prometheus::register_int_gauge_vec!(
            "outlier_health_check_ok",
            "Whether a dependency check passes (1) or fails (0), by check",
            &["check"]
        )
        .expect("metric registers once")
    });

/// Health of a binary's dependencies, one named check each ("kafka",
/// "clickhouse", "lancedb"). Healthy when every check is ok.
/// The values of a metric's label, known at compile time: declared with
/// [`labels!`](crate::labels), counted with [`Counter`] and timed with
/// [`Histograms`], so a call site names a variant, never a string.
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

/// Declares a [`Label`] enum: `labels! { pub enum Outcome { Ok = "ok", Error = "error" } }`.
#[macro_export]
macro_rules! labels {
    ($(#[$m:meta])* $vis:vis enum $ty:ident { $($(#[$vm:meta])* $var:ident = $name:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $ty { $($(#[$vm])* $var),+ }
        impl $crate::telemetry::Label for $ty {
            const ALL: &'static [Self] = &[$($ty::$var),+];
            fn name(self) -> &'static str {
                match self { $($ty::$var => $name),+ }
            }
        }
    };
}

/// A counter with one label whose values are the variants of `L`. Every
/// value's series exists from registration on (at 0), so rates and alert
/// rules see it before the first occurrence.
pub struct Counter<L: Label> {
    vec: prometheus::IntCounterVec,
    label: std::marker::PhantomData<L>,
}

impl<L: Label> Counter<L> {
    /// Registers `name` in the default registry (once per process).
    pub fn register(name: &str, help: &str, label: &str) -> Self {
        let vec = prometheus::register_int_counter_vec!(name, help, &[label])
            .expect("metric registers once");
        for l in L::ALL {
            vec.with_label_values(&[l.name()]);
        }
        Self {
            vec,
            label: std::marker::PhantomData,
        }
    }

    pub fn inc(&self, l: L) {
        self.vec.with_label_values(&[l.name()]).inc();
    }

    pub fn inc_by(&self, l: L, n: u64) {
        self.vec.with_label_values(&[l.name()]).inc_by(n);
    }

    pub fn get(&self, l: L) -> u64 {
        self.vec.with_label_values(&[l.name()]).get()
    }
}

/// A histogram with one label whose values are the variants of `L`.
pub struct Histograms<L: Label> {
    vec: prometheus::HistogramVec,
    label: std::marker::PhantomData<L>,
}

impl<L: Label> Histograms<L> {
    /// Registers `name` in the default registry (once per process).
    pub fn register(name: &str, help: &str, label: &str, buckets: Vec<f64>) -> Self {
        let vec = prometheus::register_histogram_vec!(name, help, &[label], buckets)
            .expect("metric registers once");
        for l in L::ALL {
            vec.with_label_values(&[l.name()]);
        }
        Self {
            vec,
            label: std::marker::PhantomData,
        }
    }

    pub fn observe(&self, l: L, v: f64) {
        self.vec.with_label_values(&[l.name()]).observe(v);
    }
}

/// A dependency whose state the health endpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    Kafka,
    ClickHouse,
    LanceDb,
    /// The collector's kernel (or /proc) capture.
    Capture,
    /// The webhook receiving findings.
    Webhook,
    /// The fleet signatures followed from their topic.
    Signatures,
    /// The suppression rules followed from their topic.
    Suppressions,
}

impl Check {
    /// The name in `/health` and in the `check` label of
    /// `outlier_health_check_ok`.
    pub fn name(self) -> &'static str {
        match self {
            Check::Kafka => "kafka",
            Check::ClickHouse => "clickhouse",
            Check::LanceDb => "lancedb",
            Check::Capture => "capture",
            Check::Webhook => "webhook",
            Check::Signatures => "signatures",
            Check::Suppressions => "suppressions",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<Check, CheckState>>>,
}

impl Health {
    pub fn new(checks: &[Check]) -> Self {
        let h = Self::default();
        for c in checks {
            h.set(*c, false, "not checked yet");
        }
        h
    }

    pub fn set(&self, name: Check, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        HEALTH_CHECK
            .with_label_values(&[name.name()])
            .set(i64::from(ok));
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let changed = checks.get(&name).is_none_or(|c| c.ok != ok);
        if changed {
            let since_unix_s = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            checks.insert(
                name,
                CheckState {
                    ok,
                    detail,
                    since_unix_s,
                },
            );
        } else if let Some(c) = checks.get_mut(&name) {
            c.detail = detail;
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|c| c.ok)
    }

    fn report(&self) -> serde_json::Value {
        let checks: BTreeMap<&str, CheckState> = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.name(), v.clone()))
            .collect();
        serde_json::json!({ "healthy": checks.values().all(|c| c.ok), "checks": checks })
    }
}

async fn metrics_handler() -> impl IntoResponse {
    #[cfg(feature = "jemalloc")]
    crate::alloc::observe();
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn health_handler(State(h): State<Health>) -> impl IntoResponse {
    let code = if h.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(h.report()))
}

/// Serves `/metrics`, `/health` (readiness: 200 when every dependency
/// check is ok, 503 with the failing checks otherwise; `/ready` is the
/// same) and `/live` (liveness: 200 while the process serves — an
/// orchestrator restarts on liveness, and waits for readiness, so a
/// dependency outage never restarts a healthy process) on `addr` until
/// `shutdown` fires. Returns the bound address (useful with port 0).
pub async fn serve_http(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .route("/ready", get(health_handler))
        .route("/live", get(|| async { "live\n" }))
        .with_state(health);
    tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "http server failed");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics and /health");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::labels! {
        enum Outcome {
            Done = "done",
            Failed = "failed",
        }
    }

    #[test]
    fn a_labelled_counter_has_every_series_from_the_start_and_counts_by_variant() {
        let c: Counter<Outcome> =
            Counter::register("outlier_test_outcomes_total", "test", "outcome");
        let series = |want: &str| {
            prometheus::gather()
                .into_iter()
                .find(|f| f.name() == "outlier_test_outcomes_total")
                .map(|f| {
                    f.get_metric()
                        .iter()
                        .find(|m| m.get_label()[0].value() == want)
                        .map(|m| m.get_counter().get_value())
                })
        };
        assert_eq!(series("failed"), Some(Some(0.0)), "registered at 0");
        c.inc(Outcome::Done);
        c.inc_by(Outcome::Done, 2);
        assert_eq!((c.get(Outcome::Done), c.get(Outcome::Failed)), (3, 0));
        assert_eq!(series("done"), Some(Some(3.0)));
        assert_eq!(Outcome::ALL.len(), 2);
    }

    #[test]
    fn health_is_the_conjunction_of_checks() {
        let h = Health::new(&[Check::Kafka, Check::ClickHouse]);
        assert!(!h.is_healthy());
        h.set(Check::Kafka, true, "ok");
        assert!(!h.is_healthy());
        h.set(Check::ClickHouse, true, "ok");
        assert!(h.is_healthy());
        h.set(Check::Kafka, false, "broker down");
        assert!(!h.is_healthy());
        assert_eq!(h.report()["checks"]["kafka"]["detail"], "broker down");
    }
}
