//! The judge: scores events against their workload's baseline and the
//! threat classifier and applies operators' feedback. Pure domain logic,
//! no I/O: the worker moves it onto a blocking thread for each batch, and
//! the benchmarks and the evaluation drive it directly.

use std::collections::HashMap;

use outlier_classifier::{Assessment, Classifier};
use outlier_common::featurize::embed;
use outlier_common::now_ns;
use outlier_proto::{
    Contribution, Event, Feedback, FeedbackLabel, Heartbeat, ScoredEvent, Verdict,
};

use crate::baseline::Baseline;
use crate::config::{DecisionMode, ScoringConfig};
use crate::decode::{DeadLetter, Input};
use crate::metrics;
use crate::score;

/// Identifies a workload's baseline: `org\0workload` (names cannot contain
/// control characters, so the pair is unambiguous).
pub type WorkloadKey = String;

/// What a new lineage is, for the explanation: the parent's (`served_by`
/// None) or the web or database server's process tree's. "New" is "not
/// learned yet": a lineage under a server that was flagged stays new for
/// up to three flags.
fn new_lineage_note(e: &Event, served_by: Option<&str>) -> Option<String> {
    let program = e.program_name();
    let parent = &e.parent_comm;
    Some(match (e.kind_name(), served_by) {
        (_, None) if parent.is_empty() => return None,
        ("exec", None) => format!("new to this workload: {parent} starting {program}"),
        (kind, None) => format!("new to this workload: {kind} by {program} under {parent}"),
        ("exec", Some(s)) => format!("new to this workload: {program} in {s}'s process tree"),
        (kind, Some(s)) => {
            format!("new to this workload: {kind} by {program} in {s}'s process tree")
        }
    })
}

pub fn workload_key(org: &str, workload: &str) -> WorkloadKey {
    let mut k = String::with_capacity(org.len() + workload.len() + 1);
    k.push_str(org);
    k.push('\0');
    k.push_str(workload);
    k
}

pub(crate) fn split_key(k: &str) -> (&str, &str) {
    k.split_once('\0').unwrap_or((k, ""))
}

/// What became of a consumed record.
pub enum Outcome {
    Scored(Box<ScoredEvent>),
    /// Feedback applied to a baseline; nothing to publish.
    Applied,
    /// A heartbeat to forward to the heartbeats topic.
    Heartbeat(Heartbeat),
    Dead(DeadLetter),
}

/// Judges events: the workloads' baselines, the threat classifier with its
/// per-host state, and the settings that combine them. Owned by one worker;
/// moved onto a blocking thread for each batch.
#[derive(Default)]
pub struct Judge {
    pub(crate) baselines: HashMap<WorkloadKey, Baseline>,
    /// Per workload: the classifier's log-odds over what it learned and
    /// the lineages it showed (see `score::WorkloadHistory`).
    pub(crate) history: HashMap<WorkloadKey, score::WorkloadHistory>,
    classifier: Option<Classifier>,
    scoring: ScoringConfig,
    /// Events a workload learns unconditionally (see `BaselineConfig`).
    warmup_events: u64,
    /// The fleet's immune memory: behaviours confirmed malicious anywhere
    /// in an org alert on every host of it.
    signatures: outlier_common::immune::Signatures,
    /// The operators' suppressions: an alert one of them keeps from the
    /// alerts topic is not one awaiting feedback (repeats.rs).
    suppressions: outlier_common::suppress::Suppressions,
}

impl Judge {
    pub fn new(scoring: ScoringConfig, warmup_events: u64, classifier: Option<Classifier>) -> Self {
        Self {
            baselines: HashMap::new(),
            history: HashMap::new(),
            classifier,
            scoring,
            warmup_events,
            signatures: Default::default(),
            suppressions: Default::default(),
        }
    }

    /// With these baselines already learned (benchmarks, evaluations).
    pub fn with_baselines(mut self, baselines: HashMap<WorkloadKey, Baseline>) -> Self {
        self.baselines = baselines;
        self
    }

    /// Following the fleet's immune memory.
    pub fn with_signatures(mut self, signatures: outlier_common::immune::Signatures) -> Self {
        self.signatures = signatures;
        self
    }

    /// Following the operators' suppressions.
    pub fn with_suppressions(
        mut self,
        suppressions: outlier_common::suppress::Suppressions,
    ) -> Self {
        self.suppressions = suppressions;
        self
    }

    /// Baselines in memory.
    pub fn workloads(&self) -> usize {
        self.baselines.len()
    }

    /// Hosts whose context the classifier keeps, and the host state it
    /// dropped to stay within its bounds since the last call.
    pub fn host_state(&mut self) -> (usize, Vec<outlier_classifier::state::Dropped>) {
        match self.classifier.as_mut() {
            Some(c) => (c.extractor().hosts(), c.drain_dropped()),
            None => (0, Vec::new()),
        }
    }

    /// Scores one event against its workload's baseline, classifies it,
    /// combines both into the verdict, and learns the behaviour unless the
    /// event alerted after warm-up. This is the whole per-event hot path.
    pub fn score(&mut self, event: Event) -> ScoredEvent {
        self.score_detailed(event).0
    }

    /// [`Judge::score`], with the evidence the verdict was decided on.
    pub fn score_detailed(&mut self, event: Event) -> (ScoredEvent, score::Signals) {
        self.score_as(event, true)
    }

    /// [`Judge::score_detailed`]; `own`: whether the event counts towards
    /// its workload's own operating point (`score::OwnScores`). Always so
    /// in the pipeline; an evaluation that injects many attacks into a few
    /// host-hours leaves them out, so that each attack is judged as if it
    /// were the only one (`loadtest eval`).
    pub fn score_as(&mut self, event: Event, own: bool) -> (ScoredEvent, score::Signals) {
        let key = workload_key(&event.org, &event.workload);
        if !self.history.contains_key(&key) {
            self.history
                .insert(key.clone(), score::WorkloadHistory::default());
        }
        let history = self.history.get_mut(&key).expect("inserted above");
        let lineage = outlier_common::featurize::lineage_key(&event);
        let baseline = self.baselines.entry(key).or_default();
        let v = embed(&event);
        let bkey = outlier_common::featurize::behaviour_key(&v);
        let t = self.scoring.thresholds_for(&event.org, &event.workload);
        let j = score::judge_keyed(baseline, &v, bkey, t);
        let mut explanation = score::explain(&j, &event.workload);
        let mut verdict = j.verdict;
        let mut threat = None;
        // Immune memory: confirmed malicious somewhere in the org.
        let signature = self.signatures.matching(&event, &v, now_ns());
        let mut signals = score::Signals {
            anomaly: j.score,
            nearest_distance: j.nearest_distance,
            nearest_count: j.nearest_count,
            baseline_events: baseline.events(),
            p_malicious: 0.0,
            high_precision: None,
            workload_offset: 0.0,
            p_decision: 0.0,
            new_lineage: history.is_new_lineage(lineage, self.scoring.decision.adapt_min_events),
            repeat_of_alert: false,
            own_shift: 0.0,
            own_alert_shift: 0.0,
        };
        let mut lineage_note = if signals.new_lineage {
            new_lineage_note(&event, None)
        } else {
            None
        };
        // The decision's log-odds before the workload's own operating
        // point, for that operating point (score::OwnScores).
        let mut own_logit = None;
        let mut own_note = None;
        // Whether the fleet's decision alone (without the workload's own
        // operating point) would have alerted: what the shift keeps from
        // the operator is still not learned.
        let mut fleet_alert = false;
        // The lineage under the web or database server the process runs
        // under, when the classifier's process table vouches for one.
        let mut served = None;
        if let Some(c) = self.classifier.as_mut() {
            let (features, p) = c.classify(&event);
            let server = &features.context.served_by;
            if !server.is_empty() {
                let k = outlier_common::featurize::served_lineage_key(&event, server);
                let new = history.is_new_lineage(k, self.scoring.decision.adapt_min_events);
                if new && !signals.new_lineage {
                    signals.new_lineage = true;
                    lineage_note = new_lineage_note(&event, Some(server));
                }
                served = Some(k);
            }
            signals.p_malicious = p.p_malicious;
            signals.high_precision = outlier_classifier::high_precision(&features);
            let meta = &c.model().meta;
            let cc = &self.scoring.classifier;
            let d = &self.scoring.decision;
            let warn = t.classifier_warn.unwrap_or(meta.warn_threshold);
            let alert = t.classifier_alert.unwrap_or(meta.alert_threshold);
            signals.workload_offset = history
                .log_odds
                .offset(d.adapt_quantile, d.adapt_min_events);
            verdict = match d.mode {
                DecisionMode::Calibrated => {
                    let warn = t.decision_warn.unwrap_or(d.warn);
                    signals.own_shift =
                        history
                            .own
                            .shift(d.own_budget, score::logit(warn), d.own_max_shift);
                    if history.watched() >= d.adapt_min_events && signals.high_precision.is_none() {
                        own_logit = Some(score::decision_logit(&signals, d));
                    }
                    let alert = t.decision_alert.unwrap_or(d.alert);
                    signals.own_alert_shift =
                        history
                            .own
                            .shift(d.own_alert_budget, score::logit(alert), d.own_max_shift);
                    let (pd, v) = score::decide(&signals, d, warn, alert);
                    signals.p_decision = pd;
                    fleet_alert = own_logit.is_some_and(|z| score::sigmoid(z) >= alert);
                    if let Some(z) = own_logit {
                        let p = score::sigmoid(z);
                        let (what, point, budget, shift) = if v == Verdict::Ok && p >= warn {
                            ("flagged", warn, d.own_budget, signals.own_shift)
                        } else if v == Verdict::Warn && p >= alert {
                            (
                                "alerted",
                                alert,
                                d.own_alert_budget,
                                signals.own_alert_shift.max(signals.own_shift),
                            )
                        } else {
                            ("", 0.0, 0.0, 0.0)
                        };
                        if !what.is_empty() {
                            metrics::OWN_LOWERED.inc();
                            own_note = Some(format!(
                                "; not {what}: {:.2}% of the workload's last {} scored events would have been, above its budget of {:.2}%, so {shift:.2} log-odds were taken off (its own operating point; P {p:.3} by the fleet's)",
                                100.0 * history.own.flagged_share(score::logit(point)),
                                history.own.window(),
                                100.0 * budget,
                            ));
                        }
                    }
                    // Until the workload's history is long enough to say
                    // what is ordinary for it, novelty alone still warns
                    // and alerts as in the seed's design.
                    if history.watched() < d.adapt_min_events && j.verdict as i32 > v as i32 {
                        j.verdict
                    } else {
                        v
                    }
                }
                DecisionMode::Max => score::combine(
                    j.verdict,
                    j.score,
                    p.p_malicious,
                    warn,
                    alert,
                    cc.known_below,
                ),
            };
            if signature.is_some() {
                verdict = Verdict::Alert;
            }
            // SHAP explanations cost ~10x the classification: computed for
            // what is flagged (by either side) or what the classifier
            // itself would flag, not for every event leaning malicious.
            // A flagged event is always given a tactic and technique, from
            // its evidence, whatever the classifier's own call.
            let flagged = matches!(verdict, Verdict::Warn | Verdict::Alert);
            let a = if flagged || p.p_malicious >= warn {
                c.explain(&features, &p, cc.explain_top)
            } else {
                c.assess(&p)
            };
            metrics::THREATS
                .with_label_values(&[a.category.as_str()])
                .inc();
            threat = Some(a);
        }
        if let Some(n) = lineage_note {
            explanation.push_str("; ");
            explanation.push_str(&n);
        }
        if let Some(m) = &signature {
            verdict = Verdict::Alert;
            metrics::SIGNATURE_MATCHES.inc();
            explanation = format!(
                "matches fleet signature {} (confirmed malicious on {}: {}; {}); {explanation}",
                m.signature_id, m.host, m.summary, m.reason
            );
        }
        // What matches a signature is never learned, even in warm-up; nor,
        // after it, what alerted, or what the fleet's decision would have
        // alerted had the workload's own operating point not lowered it:
        // a workload busy with new work cannot teach itself an attack that
        // happened during the busy spell (it alerts once the spell ends
        // unless confirmed benign).
        let learned = signature.is_none()
            && ((verdict != Verdict::Alert && !fleet_alert)
                || baseline.events() < self.warmup_events);
        // An alert that is not learned awaits feedback: its repeats on the
        // host refer to it instead of alerting again (repeats.rs).
        let mut repeat = None;
        if verdict == Verdict::Alert && !learned && signature.is_none() {
            let window = self
                .scoring
                .decision
                .repeat_window_s
                .saturating_mul(1_000_000_000);
            let pkey = crate::repeats::key(&event.host, bkey);
            let ts = event.ts_ns;
            repeat = history.pending.repeat_of(pkey, ts, window);
            if repeat.is_some() {
                verdict = Verdict::Ok;
                signals.repeat_of_alert = true;
                metrics::ALERT_REPEATS.inc();
            } else if window > 0 && self.suppressions.matching(&event, now_ns()).is_none() {
                history.pending.alerted(pkey, ts, &event.event_id);
            }
        }
        if let Some(z) = own_logit.filter(|_| own && signature.is_none() && repeat.is_none()) {
            history.own.add(z, self.scoring.decision.own_period);
        }
        if learned {
            baseline.observe_keyed(&v, bkey, event.ts_ns);
            history.learn(
                lineage,
                self.classifier
                    .is_some()
                    .then(|| score::logit(signals.p_malicious)),
            );
            // A web or database server's process tree runs a short, stable
            // list of programs: once novelty is judged, a program new to
            // it is learned from an event that was not flagged, and a
            // flagged one counts as an unconfirmed alert. A web shell's
            // first `cat` warning does not make its next `cat` routine.
            if let Some(k) = served {
                let judged = history.watched() >= self.scoring.decision.adapt_min_events;
                if verdict == Verdict::Ok || !judged {
                    history.learn_lineage(k);
                } else {
                    history.alerted(k);
                }
            }
        } else if signature.is_none() && repeat.is_none() {
            // An alert raised (a held-back repeat was raised before).
            history.alerted(lineage);
            if let Some(k) = served {
                history.alerted(k);
            }
        }
        if let Some(a) = threat.as_ref().filter(|a| !a.explanation.is_empty()) {
            explanation.push_str("; ");
            if a.category == "benign" {
                explanation.push_str("malicious-looking (below the classifier's threshold): ");
            } else {
                explanation.push_str(&format!("{} ({:.0}%): ", a.category, 100.0 * a.confidence));
            }
            explanation.push_str(&a.explanation);
        }
        if let Some(r) = &repeat {
            explanation = format!(
                "repeat {} of alert {}, raised {} s before and awaiting feedback: not alerted again; {explanation}",
                r.repeats,
                r.event_id,
                event.ts_ns.saturating_sub(r.first_ns) / 1_000_000_000
            );
        }
        // (A fleet signature alerts whatever the shift.)
        if let Some(n) = own_note.filter(|_| verdict != Verdict::Alert) {
            explanation.push_str(&n);
        }
        if !learned {
            explanation.push_str("; not learned until confirmed benign");
        }
        let mut threat = threat.unwrap_or_else(|| Assessment {
            category: String::new(),
            tactic: String::new(),
            technique: String::new(),
            confidence: 0.0,
            p_malicious: 0.0,
            contributions: Vec::new(),
            explanation: String::new(),
        });
        if let Some(m) = &signature
            && threat.tactic.is_empty()
        {
            threat.tactic = m.tactic.clone();
            threat.technique = m.technique.clone();
        }
        let scored = ScoredEvent {
            signature_id: signature.map(|m| m.signature_id).unwrap_or_default(),
            anomaly_score: j.score,
            nearest_distance: j.nearest_distance,
            threat_category: threat.category,
            tactic: threat.tactic,
            technique: threat.technique,
            confidence: threat.confidence,
            verdict: verdict as i32,
            explanation,
            contributions: threat
                .contributions
                .into_iter()
                .map(|c| Contribution {
                    feature: c.feature,
                    value: f64::from(c.value),
                    shap: f64::from(c.shap),
                    sentence: c.sentence,
                })
                .collect(),
            scored_at_ns: now_ns(),
            scorer_version: outlier_common::VERSION.to_string(),
            baseline_size: j.baseline_size as u64,
            learned,
            behaviour_key: bkey,
            event: Some(event),
            // Set when publishing, from the operators' current rules.
            suppressed_by: String::new(),
        };
        (scored, signals)
    }

    /// Applies an operator's verdict to the workload's baseline.
    pub fn feedback(&mut self, fb: &Feedback) {
        let Some(event) = &fb.event else { return };
        let key = workload_key(&event.org, &event.workload);
        let v = embed(event);
        if let Some(h) = self.history.get_mut(&key) {
            let bkey = outlier_common::featurize::behaviour_key(&v);
            h.pending.resolved(crate::repeats::key(&event.host, bkey));
            // Confirmed benign: its lineages are the workload's, under
            // its parent and under the server it ran under (while the
            // process table still shows that chain).
            if fb.label() == FeedbackLabel::Benign {
                h.learn_lineage(outlier_common::featurize::lineage_key(event));
                let server = self
                    .classifier
                    .as_ref()
                    .map(|c| c.extractor().served_by_of(event))
                    .unwrap_or_default();
                if !server.is_empty() {
                    h.learn_lineage(outlier_common::featurize::served_lineage_key(
                        event, &server,
                    ));
                }
            }
        }
        let baseline = self.baselines.entry(key).or_default();
        match fb.label() {
            FeedbackLabel::Benign => {
                // Seen now, as far as retention goes: the confirmation is recent.
                baseline.observe(&v, event.ts_ns.max(fb.ts_ns));
                tracing::info!(org = %event.org, workload = %event.workload, event_id = %event.event_id, actor = %fb.actor, "behaviour confirmed benign: learned");
            }
            FeedbackLabel::Malicious => {
                let removed = baseline.forget(&v);
                tracing::info!(org = %event.org, workload = %event.workload, event_id = %event.event_id, actor = %fb.actor, removed, "behaviour confirmed malicious: forgotten");
            }
            FeedbackLabel::Unspecified => {}
        }
    }

    /// Scores a batch in order.
    pub fn score_batch(&mut self, inputs: Vec<Result<Input, DeadLetter>>) -> Vec<Outcome> {
        inputs
            .into_iter()
            .map(|input| match input {
                Ok(Input::Event(e)) => Outcome::Scored(Box::new(self.score(e))),
                Ok(Input::Feedback(fb)) => {
                    self.feedback(&fb);
                    Outcome::Applied
                }
                Ok(Input::Heartbeat(h)) => Outcome::Heartbeat(h),
                Err(dl) => Outcome::Dead(dl),
            })
            .collect()
    }
}
