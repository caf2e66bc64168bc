//! Scorer configuration (`scorer.toml`, `OUTLIER_SCORER__*`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use outlier_common::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerConfig {
    pub kafka: KafkaConfig,
    /// Consumer group; scorers in one group share the events topic's partitions.
    pub group_id: String,
    /// Address of `/metrics` and `/health`.
    pub http_addr: SocketAddr,
    pub baseline: BaselineConfig,
    pub scoring: ScoringConfig,
    pub batch: BatchConfig,
    pub limits: LimitsConfig,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: "outlier-scorer".to_string(),
            http_addr: "127.0.0.1:9101".parse().expect("valid address"),
            baseline: BaselineConfig::default(),
            scoring: ScoringConfig::default(),
            batch: BatchConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl ScorerConfig {
    /// Checks every setting's range at load; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.scoring.decision.validate()?;
        self.limits.validate()?;
        self.kafka.validate()?;
        if self.batch.max_events == 0 {
            return Err("batch.max_events must be at least 1".into());
        }
        if self.batch.max_inflight == 0 {
            return Err("batch.max_inflight must be at least 1".into());
        }
        if self.batch.max_bytes < 1 << 20 {
            return Err(format!(
                "batch.max_bytes = {} is below 1 MiB (one record may be that large)",
                self.batch.max_bytes
            ));
        }
        if self.baseline.flush_interval_ms < 10 {
            return Err(format!(
                "baseline.flush_interval_ms = {} is below 10",
                self.baseline.flush_interval_ms
            ));
        }
        Ok(())
    }
}

/// Bounds that keep one record, or hostile cardinality, from stalling or
/// exhausting the scorer (docs/reliability.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds a record may keep failing while its dependency answers
    /// before it is dead-lettered as poison.
    pub poison_budget_s: u64,
    /// Largest event record accepted, in bytes; larger ones are
    /// dead-lettered (so every scored and dead-letter copy fits the topics).
    pub max_event_bytes: usize,
    /// Baselines held in memory; beyond it the least recently used are
    /// persisted and unloaded (and loaded again when their workload
    /// reports).
    pub max_loaded_baselines: usize,
    /// Baselines one org may hold in memory; beyond it the org's own least
    /// recently used are unloaded, so an org with many (or churning)
    /// workloads cannot push other orgs' baselines out.
    pub max_loaded_baselines_per_org: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            poison_budget_s: 30,
            max_event_bytes: 256 * 1024,
            max_loaded_baselines: 50_000,
            max_loaded_baselines_per_org: 20_000,
        }
    }
}

impl LimitsConfig {
    /// Checks the bounds at start-up; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.poison_budget_s == 0 {
            return Err("limits.poison_budget_s must be at least 1".into());
        }
        if !(1024..=(1 << 20) - 16 * 1024).contains(&self.max_event_bytes) {
            return Err(format!(
                "limits.max_event_bytes must be between 1024 and {} (the scored copy must fit a 1 MiB Kafka record), not {}",
                (1 << 20) - 16 * 1024,
                self.max_event_bytes
            ));
        }
        if self.max_loaded_baselines < 16 {
            return Err("limits.max_loaded_baselines must be at least 16".into());
        }
        if self.max_loaded_baselines_per_org < 16 {
            return Err("limits.max_loaded_baselines_per_org must be at least 16".into());
        }
        Ok(())
    }

    pub fn retry_policy(&self) -> outlier_common::retry::RetryPolicy {
        outlier_common::retry::RetryPolicy {
            poison_budget: std::time::Duration::from_secs(self.poison_budget_s),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// LanceDB location: a local directory or an object-store URI (`s3://…`).
    pub uri: String,
    /// Persist learned behaviour at least this often.
    pub flush_interval_ms: u64,
    /// A behaviour seen again is written back (its count and last-seen
    /// time) at most once per this many seconds of event time; new
    /// behaviour is always written at the next flush. Stored last-seen
    /// times, and so pruning after a restart, may lag by this much.
    pub touch_interval_s: u64,
    /// Forget behaviour not seen for this many days.
    pub retention_days: u64,
    /// A workload learns every event until it has seen this many; after
    /// that, an event that alerts is learned only once confirmed benign
    /// (feedback), so an attacker cannot teach the baseline their behaviour.
    pub warmup_events: u64,
    /// Baselines with at least this many behaviours get an IVF index.
    pub ivf_threshold: usize,
    /// IVF lists scanned per query.
    pub nprobe: usize,
    /// LanceDB's cache of the shards' manifests and file metadata, MiB
    /// (its own default, 1 GiB, grew with every version written).
    pub cache_mb: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            uri: ".outlier/baselines".to_string(),
            flush_interval_ms: 1000,
            touch_interval_s: 300,
            retention_days: 7,
            warmup_events: 200,
            ivf_threshold: 20_000,
            nprobe: 16,
            cache_mb: 64,
        }
    }
}

impl BaselineConfig {
    pub fn index_params(&self) -> crate::baseline::IndexParams {
        crate::baseline::IndexParams {
            ivf_threshold: self.ivf_threshold.max(1),
            nprobe: self.nprobe.max(1),
            background: true,
        }
    }
}

/// Verdict thresholds on the anomaly score and, optionally, on the
/// classifier's P(malicious) (default: the thresholds tuned at training).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub warn: f32,
    pub alert: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_warn: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_alert: Option<f32>,
    /// Thresholds on the calibrated P(malicious) for this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_warn: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_alert: Option<f32>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: 0.5,
            alert: 0.9,
            classifier_warn: None,
            classifier_alert: None,
            decision_warn: None,
            decision_alert: None,
        }
    }
}

/// The threat classifier (see docs/classifier.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    pub enabled: bool,
    /// A model file from `scripts/train`; empty: the model built into the scorer.
    pub model: String,
    /// Behaviour the workload's baseline already knows (anomaly score below
    /// this) is at most warned by the classifier, never alerted.
    pub known_below: f32,
    /// Contributions explained per flagged event.
    pub explain_top: usize,
    /// Hosts whose process tables and histories are kept, all orgs
    /// together (per generation); past twice this, the org holding the
    /// most drops its older generation.
    pub max_hosts: usize,
    /// Hosts kept per org (per generation): an org past it ages out its own
    /// hosts' context, never another org's.
    pub max_hosts_per_org: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: String::new(),
            known_below: 0.1,
            explain_top: 3,
            max_hosts: 4096,
            max_hosts_per_org: 4096,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Thresholds for workloads without their own.
    pub thresholds: Thresholds,
    /// Per-workload thresholds, keyed `org/workload`.
    pub workloads: BTreeMap<String, Thresholds>,
    pub classifier: ClassifierConfig,
    pub decision: DecisionConfig,
}

/// How the verdict is reached (docs/detection.md).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecisionMode {
    /// One P(malicious) from the evidence of both judges, thresholded for
    /// a false-positive budget.
    #[default]
    Calibrated,
    /// The previous design: the more severe of the anomaly verdict and the
    /// classifier's (kept for comparison).
    Max,
}

/// The calibrated decision: P(malicious) = σ(bias + anomaly·a +
/// classifier·c + high_precision·h), where a is the anomaly score, c the
/// classifier's log-odds less what is ordinary for the workload, h whether
/// a high-precision indicator fired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    pub mode: DecisionMode,
    pub bias: f32,
    pub anomaly: f32,
    pub classifier: f32,
    pub high_precision: f32,
    /// Weight of a process lineage (kind, parent, program) new to the workload.
    pub new_lineage: f32,
    /// Behaviour seen at least this many times is repeated: the classifier
    /// alone does not flag it unless a high-precision indicator fires.
    pub repeated: u64,
    /// Verdict thresholds on P(malicious).
    pub warn: f32,
    pub alert: f32,
    /// Per-workload adaptation: the quantile of the classifier's log-odds
    /// over what the workload learned that counts as ordinary for it.
    pub adapt_quantile: f32,
    /// Events a workload learns before its adaptation and lineage novelty
    /// apply (also after a restart: that history is kept in memory); until
    /// then the anomaly verdict under `scoring.thresholds` also stands.
    pub adapt_min_events: u64,
    /// An alert still awaiting feedback is not raised again for the same
    /// behaviour on the same host within this many seconds of event time:
    /// its repeats are published `ok`, naming the alert (0: every repeat
    /// alerts). See `repeats.rs`.
    pub repeat_window_s: u64,
    /// The workload's own operating point (`score::OwnScores`): at most
    /// this share of a workload's events is flagged; a workload whose last
    /// period and current one so far would have flagged more has the
    /// excess taken off its decision (0: off, the fleet's weights alone).
    pub own_budget: f32,
    /// The same for alerts: at most this share of a workload's events
    /// alerts; the excess is taken off the alert point only
    /// (0: off).
    pub own_alert_budget: f32,
    /// Events of a workload in a period of its own operating point.
    pub own_period: u64,
    /// Most log-odds taken off a workload's decision (high-precision
    /// indicators and fleet signatures are never shifted).
    pub own_max_shift: f32,
}

impl Default for DecisionConfig {
    /// Weights and bias from `scripts/fit_decision.py` on the fit window of
    /// data/real (docs/detection.md): warn flags at most 0.1% and alert
    /// 0.01% of the benign events of each recording of each host there.
    fn default() -> Self {
        Self {
            mode: DecisionMode::Calibrated,
            bias: -2.7358,
            anomaly: 2.8101,
            classifier: 0.7025,
            high_precision: 8.4304,
            new_lineage: 2.8101,
            repeated: 2,
            warn: 0.5,
            alert: 0.9,
            adapt_quantile: 0.99,
            adapt_min_events: 1000,
            repeat_window_s: 86_400,
            own_budget: 0.001,
            own_alert_budget: 0.0001,
            own_period: 10_000,
            own_max_shift: 6.0,
        }
    }
}

impl DecisionConfig {
    /// Checks ranges at load time, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |k: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("scoring.decision.{k} = {v}: must be within 0..=1"))
            }
        };
        unit("warn", self.warn)?;
        unit("alert", self.alert)?;
        unit("adapt_quantile", self.adapt_quantile)?;
        unit("own_budget", self.own_budget)?;
        unit("own_alert_budget", self.own_alert_budget)?;
        if self.own_max_shift.is_nan() || self.own_max_shift < 0.0 {
            return Err(format!(
                "scoring.decision.own_max_shift = {}: must be 0 or more",
                self.own_max_shift
            ));
        }
        // A period must hold at least one flag (alert) within its budget.
        let fits = |what: &str, key: &str, budget: f32| {
            if budget > 0.0 && f64::from(budget) * (self.own_period as f64) + 1e-6 < 1.0 {
                return Err(format!(
                    "scoring.decision.own_period = {}: fewer events than one {what} within scoring.decision.{key} = {budget} (needs at least {:.0})",
                    self.own_period,
                    (1.0 / f64::from(budget) - 1e-3).ceil()
                ));
            }
            Ok(())
        };
        fits("flag", "own_budget", self.own_budget)?;
        fits("alert", "own_alert_budget", self.own_alert_budget)?;
        Ok(())
    }
}

impl ScoringConfig {
    pub fn thresholds_for(&self, org: &str, workload: &str) -> Thresholds {
        if self.workloads.is_empty() {
            return self.thresholds;
        }
        self.workloads
            .get(&format!("{org}/{workload}"))
            .copied()
            .unwrap_or(self.thresholds)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most events scored together.
    pub max_events: usize,
    /// Most bytes of records scored together (a batch holds at least one
    /// record): with `max_inflight`, bounds the memory batches take.
    pub max_bytes: usize,
    /// Longest wait for a batch to fill, after its first event.
    pub max_wait_ms: u64,
    /// Batches scored and sent but not yet acknowledged by Kafka; scoring
    /// the next batch overlaps with waiting for the last one's acks.
    /// Offsets are still stored in order, only once acknowledged.
    pub max_inflight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 2000,
            max_bytes: 16 << 20,
            max_wait_ms: 20,
            max_inflight: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused_at_load_by_name() {
        assert_eq!(ScorerConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut ScorerConfig)| {
            let mut c = ScorerConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.batch.max_inflight = 0).starts_with("batch.max_inflight"));
        assert!(bad(|c| c.batch.max_events = 0).starts_with("batch.max_events"));
        assert!(bad(|c| c.batch.max_bytes = 4096).starts_with("batch.max_bytes"));
        assert!(
            bad(|c| c.baseline.flush_interval_ms = 1).starts_with("baseline.flush_interval_ms")
        );
        assert!(bad(|c| c.limits.poison_budget_s = 0).starts_with("limits.poison_budget_s"));
        assert!(bad(|c| c.scoring.decision.warn = 2.0).starts_with("scoring.decision.warn"));
        assert!(
            bad(|c| c.scoring.decision.own_budget = 1.5).starts_with("scoring.decision.own_budget")
        );
        assert!(
            bad(|c| c.scoring.decision.own_period = 100).starts_with("scoring.decision.own_period")
        );
        assert!(
            bad(|c| c.scoring.decision.own_alert_budget = -0.1)
                .starts_with("scoring.decision.own_alert_budget")
        );
        // Alerts within budget need a period of at least 1 / budget events.
        let short = bad(|c| {
            c.scoring.decision.own_budget = 0.01;
            c.scoring.decision.own_period = 1_000;
        });
        assert!(
            short.starts_with("scoring.decision.own_period") && short.contains("own_alert_budget"),
            "{short}"
        );
        assert!(
            bad(|c| c.scoring.decision.own_max_shift = -1.0)
                .starts_with("scoring.decision.own_max_shift")
        );
    }

    #[test]
    fn example_config_is_the_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/scorer.toml");
        let cfg: ScorerConfig =
            outlier_common::config::load("OUTLIER_SCORER_EXAMPLE_TEST", Some(&path)).unwrap();
        assert_eq!(cfg, ScorerConfig::default());
    }

    #[test]
    fn per_workload_thresholds_apply() {
        let mut s = ScoringConfig::default();
        s.workloads.insert(
            "acme/dev".into(),
            Thresholds {
                warn: 0.85,
                alert: 0.95,
                ..Thresholds::default()
            },
        );
        assert_eq!(s.thresholds_for("acme", "dev").warn, 0.85);
        assert_eq!(s.thresholds_for("acme", "prod"), Thresholds::default());
    }
}
