//! Scorer metrics, prefixed `outlier_scorer_`.

use std::sync::LazyLock;

use outlier_common::labels;
use outlier_common::telemetry::{Counter, Histograms, Label as _};

use crate::decode::Reason;

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, exponential_buckets, register_histogram,
    register_int_counter, register_int_counter_vec, register_int_gauge,
};

labels! {
    /// What became of a consumed record.
    pub enum EventResult {
        Ok = "ok",
        Warn = "warn",
        Alert = "alert",
        Unspecified = "unspecified",
        Feedback = "feedback",
        Heartbeat = "heartbeat",
        DeadLetter = "deadletter",
    }
}

impl From<outlier_proto::Verdict> for EventResult {
    fn from(v: outlier_proto::Verdict) -> Self {
        match v {
            outlier_proto::Verdict::Ok => EventResult::Ok,
            outlier_proto::Verdict::Warn => EventResult::Warn,
            outlier_proto::Verdict::Alert => EventResult::Alert,
            outlier_proto::Verdict::Unspecified => EventResult::Unspecified,
        }
    }
}

pub static EVENTS: LazyLock<Counter<EventResult>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_events_total",
        "Events consumed, by verdict (ok/warn/alert) or `deadletter`",
        "result",
    )
});

pub static SUPPRESSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_scorer_suppressed_total",
        "Flagged events a suppression kept off the alerts topic"
    )
    .expect("metric registers once")
});

pub static SIGNATURE_MATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_scorer_signature_matches_total",
        "Events that matched a fleet signature (immune memory) and alerted"
    )
    .expect("metric registers once")
});

pub static ALERT_REPEATS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_scorer_alert_repeats_total",
        "Repeats of an alert awaiting feedback (same host and behaviour, within decision.repeat_window_s) published ok instead of alerting again"
    )
    .expect("metric registers once")
});

pub static OWN_LOWERED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_scorer_own_operating_point_lowered_total",
        "Events that would have warned or alerted under the fleet's decision or alerted, but not under their workload's own operating point (decision.own_budget, own_alert_budget)"
    )
    .expect("metric registers once")
});

pub static DEADLETTER: LazyLock<Counter<Reason>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_deadletter_total",
        "Records sent to the dead-letter topic, by reason",
        "reason",
    )
});

pub static THREATS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "outlier_scorer_threat_categories_total",
        "Events by the classifier's category (benign or ATT&CK tactic)",
        &["category"]
    )
    .expect("metric registers once")
});

pub static SCORE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_scorer_anomaly_score",
        "Anomaly scores given",
        vec![0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
    )
    .expect("metric registers once")
});

labels! {
    /// The stages of a batch.
    pub enum BatchStage {
        Load = "load",
        Score = "score",
        Produce = "produce",
    }
}

pub static STAGE_SECONDS: LazyLock<Histograms<BatchStage>> = LazyLock::new(|| {
    Histograms::register(
        "outlier_scorer_batch_stage_seconds",
        "Time per batch in each stage (score, produce, load)",
        "stage",
        exponential_buckets(0.0001, 2.5, 14).expect("valid buckets"),
    )
});

pub static LAG_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_scorer_event_lag_seconds",
        "Time from the event's timestamp to its scoring",
        exponential_buckets(0.001, 3.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static PRODUCE_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "outlier_scorer_produce_retries_total",
        "Scored records whose delivery failed and was retried"
    )
    .expect("metric registers once")
});

pub static WORKLOADS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_scorer_baseline_workloads",
        "Workloads with a baseline in memory"
    )
    .expect("metric registers once")
});

pub static BEHAVIOURS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_scorer_baseline_behaviours",
        "Distinct behaviours held in memory over all baselines"
    )
    .expect("metric registers once")
});

pub static INDEX_BUILD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "outlier_scorer_baseline_index_build_seconds",
        "Time to build a baseline's IVF index (on a thread of its own, off the scoring path)",
        exponential_buckets(0.01, 3.0, 10).expect("valid buckets")
    )
    .expect("metric registers once")
});

labels! {
    pub enum PersistOutcome {
        Ok = "ok",
        Error = "error",
    }
}

pub static PERSIST: LazyLock<Counter<PersistOutcome>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_baseline_persist_total",
        "Baseline rows written to LanceDB, by outcome (ok/error)",
        "outcome",
    )
});

labels! {
    /// The bound the classifier's host state was dropped for.
    pub enum HostStateBound {
        /// `scoring.classifier.max_hosts`, all orgs together: the org
        /// holding the most dropped its older hosts.
        Total = "total",
        /// `scoring.classifier.max_hosts_per_org`: the org aged out its own.
        Org = "org",
    }
}
pub static HOST_STATE_DROPPED: LazyLock<Counter<HostStateBound>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_host_state_dropped_total",
        "Hosts whose classifier context (process table, recent activity) was dropped to stay within scoring.classifier.max_hosts (bound=total) or max_hosts_per_org (bound=org)",
        "bound",
    )
});

pub static CLASSIFIER_HOSTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_scorer_classifier_hosts",
        "Hosts whose context the classifier keeps"
    )
    .expect("metric registers once")
});

labels! {
    /// The bound a baseline was unloaded for.
    pub enum EvictionBound {
        /// `limits.max_loaded_baselines`, all orgs together.
        Total = "total",
        /// `limits.max_loaded_baselines_per_org`: the org's own least
        /// recently used, so one org cannot push the others' out.
        Org = "org",
    }
}
pub static EVICTIONS: LazyLock<Counter<EvictionBound>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_baseline_evictions_total",
        "Idle baselines persisted and unloaded to stay within limits.max_loaded_baselines (bound=total) or limits.max_loaded_baselines_per_org (bound=org)",
        "bound",
    )
});

labels! {
    /// Where a record or a write was given up as poison.
    pub enum PoisonStage {
        Persist = "persist",
        Produce = "produce",
        Load = "load",
    }
}

pub static POISON: LazyLock<Counter<PoisonStage>> = LazyLock::new(|| {
    Counter::register(
        "outlier_scorer_poison_total",
        "Records or writes given up as poison (they failed while the dependency answered), by stage",
        "stage",
    )
});

/// A record sent to the dead-letter topic: logged with where it came from
/// and why, and counted among the events and by reason.
pub fn dead_lettered(msg: &rdkafka::message::OwnedMessage, dl: &crate::decode::DeadLetter) {
    use rdkafka::Message as _;
    EVENTS.inc(EventResult::DeadLetter);
    DEADLETTER.inc(dl.label);
    tracing::warn!(
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        reason = %dl.reason,
        label = dl.label.name(),
        "record sent to dead-letter topic"
    );
}

/// A write or record given up as poison (it failed while its dependency
/// answered): counted by stage and logged with what it was and why.
pub fn poisoned(stage: PoisonStage, subject: &str, error: &dyn std::fmt::Display, outcome: &str) {
    POISON.inc(stage);
    tracing::error!(
        stage = stage.name(),
        subject,
        error = %error,
        "given up as poison: {outcome}"
    );
}

/// A baseline load or write that failed and will be retried: logged, and
/// a write counted.
pub fn store_failed(
    stage: PoisonStage,
    subject: &str,
    error: &dyn std::fmt::Display,
    retry_in: std::time::Duration,
) {
    let what = match stage {
        PoisonStage::Load => "baseline load failed",
        _ => {
            PERSIST.inc(PersistOutcome::Error);
            "baseline write failed"
        }
    };
    tracing::error!(
        subject,
        error = %error,
        retry_in_ms = retry_in.as_millis() as u64,
        "{what}"
    );
}
