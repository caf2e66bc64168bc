//! Scoring one event against its workload's baseline (the first seed's rule):
//! score = min(1, 2 × cosine distance to the nearest known behaviour); a
//! workload with no baseline scores 1.0.

use outlier_common::featurize::Embedding;
use outlier_proto::Verdict;

use crate::baseline::Baseline;
use crate::config::{DecisionConfig, Thresholds};

/// Distance reported when there is nothing to compare with.
pub const NO_NEIGHBOUR_DISTANCE: f32 = 2.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub score: f32,
    pub nearest_distance: f32,
    /// Times the nearest behaviour was seen (0 when there is none).
    pub nearest_count: u64,
    pub baseline_size: usize,
    pub verdict: Verdict,
}

/// The evidence an event's verdict is decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    /// Anomaly score (2 × nearest distance, capped at 1).
    pub anomaly: f32,
    pub nearest_distance: f32,
    /// Times the nearest known behaviour was seen.
    pub nearest_count: u64,
    /// Events the workload's baseline has learned.
    pub baseline_events: u64,
    /// The classifier's P(malicious) (0 without a classifier).
    pub p_malicious: f32,
    /// A high-precision indicator that fired (see `outlier_classifier::HIGH_PRECISION`).
    pub high_precision: Option<&'static str>,
    /// What is ordinary for the workload: the classifier log-odds its own
    /// learned events reach (per-workload adaptation). Taken off an event's
    /// in proportion to its closeness to what the workload knows,
    /// `1 - anomaly`: a variant of the workload's routine counts for less,
    /// behaviour unlike all of it in full. (Taken off every event alike, it
    /// left a web host whose own PHP workers run shells, and which the
    /// classifier was not trained on, 66% of its attack tests flagged.)
    pub workload_offset: f32,
    /// The calibrated P(malicious).
    pub p_decision: f32,
    /// The process lineage (kind, parent, program) is new to the workload,
    /// or (kind, server, program) for a process under a web or database
    /// server (false until the workload's lineages have been watched long
    /// enough).
    pub new_lineage: bool,
    /// It alerted but repeats an alert awaiting feedback, so it was
    /// published `ok` (`repeats.rs`).
    pub repeat_of_alert: bool,
    /// The workload's own operating point: log-odds taken off the
    /// decision because more than its budget of the workload's recent
    /// events would have been flagged without it ([`OwnScores`]). Not
    /// applied when a high-precision indicator fires.
    pub own_shift: f32,
    /// The same for the alert point, from the workload's alert budget: at
    /// least `own_shift` (what is shifted below the warn point is not
    /// alerted either).
    pub own_alert_shift: f32,
}

/// Log-odds of `p`, bounded to ±12.
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(6e-6, 1.0 - 6e-6);
    (p / (1.0 - p)).ln()
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Whether the event repeats behaviour its workload has shown `repeated`
/// times or more (an exact match of the normalised behaviour).
pub fn is_repeated(s: &Signals, repeated: u64) -> bool {
    s.nearest_distance < 1e-4 && s.nearest_count >= repeated.max(1)
}

/// The log-odds of the calibrated decision by the fleet's weights, before
/// the workload's own operating point ([`Signals::own_shift`]).
pub fn decision_logit(s: &Signals, d: &DecisionConfig) -> f32 {
    let hp = s.high_precision.is_some();
    let classifier = if is_repeated(s, d.repeated) && !hp {
        0.0
    } else {
        // What is ordinary for the workload discounts what resembles it,
        // not what is unlike all it knows (see `Signals::workload_offset`).
        (logit(s.p_malicious) - s.workload_offset * (1.0 - s.anomaly.clamp(0.0, 1.0))).max(-12.0)
    };
    d.bias
        + d.anomaly * s.anomaly
        + d.classifier * classifier
        + if hp { d.high_precision } else { 0.0 }
        + if s.new_lineage { d.new_lineage } else { 0.0 }
}

/// The calibrated decision (docs/detection.md): P(malicious) from the
/// anomaly evidence and the classifier's, and the verdict under the
/// thresholds `warn`/`alert` on it.
///
/// The classifier's evidence is its log-odds less the workload's offset
/// (what is ordinary for it), and it is not counted at all for behaviour
/// the workload has repeated unless a high-precision indicator fired: a
/// repeat of ordinary work is not an alarm because its command line looks
/// like an attack, while `bash -i >& /dev/tcp/…` stays one however often
/// it was seen.
pub fn decide(s: &Signals, d: &DecisionConfig, warn: f32, alert: f32) -> (f32, Verdict) {
    let hp = s.high_precision.is_some();
    let z = decision_logit(s, d);
    let (warn_shift, alert_shift) = if hp {
        (0.0, 0.0)
    } else {
        (s.own_shift, s.own_alert_shift.max(s.own_shift))
    };
    let p = sigmoid(z - warn_shift);
    let v = if sigmoid(z - alert_shift) >= alert {
        Verdict::Alert
    } else if p >= warn {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    (p, v)
}

/// What a workload's own history says about its events, beside its
/// baseline: how attack-like its ordinary activity looks to the classifier,
/// the process lineages it has shown, and how its recent events scored.
/// Kept in memory by the scorer that owns the workload and rebuilt from the
/// stream after a restart or a hand-over: all apply only once `min_events`
/// have been watched.
#[derive(Debug, Clone, Default)]
pub struct WorkloadHistory {
    pub log_odds: LogOdds,
    /// Its alerts awaiting feedback.
    pub pending: crate::repeats::Pending,
    /// The decision's log-odds over its recent events.
    pub own: OwnScores,
    lineages: std::collections::HashSet<u64>,
    /// Lineages not learned yet, and how often they alerted.
    lineage_alerts: std::collections::HashMap<u64, u8>,
    watched: u64,
}

/// Lineages remembered per workload (a workload with more is not a
/// workload: the excess is not remembered, and reads as new).
const MAX_LINEAGES: usize = 1 << 16;

/// Unconfirmed alerts of a new lineage after which it is no longer new.
pub const LINEAGE_ALERTS: u8 = 3;

impl WorkloadHistory {
    /// Events watched (learned) since this scorer took the workload.
    pub fn watched(&self) -> u64 {
        self.watched
    }

    /// Whether `lineage` is new, once the history is long enough to say.
    pub fn is_new_lineage(&self, lineage: u64, min_events: u64) -> bool {
        self.watched >= min_events && !self.lineages.contains(&lineage)
    }

    /// Takes in a learned event.
    pub fn learn(&mut self, lineage: u64, logit: Option<f32>) {
        self.watched += 1;
        self.shown(lineage);
        if let Some(l) = logit {
            self.log_odds.add(l);
        }
    }

    /// Takes in another lineage a learned event showed (its lineage under
    /// the server it runs under, `featurize::served_lineage_key`), without
    /// counting the event again.
    pub fn learn_lineage(&mut self, lineage: u64) {
        self.shown(lineage);
    }

    /// Takes in a lineage a learned event showed.
    fn shown(&mut self, lineage: u64) {
        if self.lineages.len() < MAX_LINEAGES {
            self.lineages.insert(lineage);
        }
    }

    /// Takes in the lineage of an event that alerted and was not learned.
    /// After [`LINEAGE_ALERTS`] such alerts the lineage is the workload's
    /// own: the rest of what that program does under that parent is judged
    /// on its distance, not alerted again as new each time (otherwise one
    /// unconfirmed alert makes every later event of its lineage new, and a
    /// build box's test run alerted thousands of times).
    pub fn alerted(&mut self, lineage: u64) {
        if self.lineages.contains(&lineage) {
            return;
        }
        if self.lineage_alerts.len() >= MAX_LINEAGES {
            self.lineage_alerts.clear();
        }
        let n = self.lineage_alerts.entry(lineage).or_default();
        *n += 1;
        if *n >= LINEAGE_ALERTS {
            self.lineage_alerts.remove(&lineage);
            self.shown(lineage);
        }
    }
}

/// The workload's own operating point. The decision's weights and bias are
/// fitted on a fleet's hosts so that each flags at most its budget; a
/// workload busier with new work than any of them (a build box on a
/// decision fitted on quiet servers) would flag several times that.
/// This keeps the decision's log-odds over the workload's scored events,
/// period by period (`period` events each; a histogram of 0.25-wide bins
/// over [-24, 40]), and gives the shift that keeps the flagged share of
/// the last completed period *and the current one so far* within
/// `budget`: how far the top `budget` of them stood above the warn point,
/// at most `max`.
///
/// The current period counts as soon as one has completed: a build box's
/// new work comes in bursts after quiet spells (a test suite's new
/// binaries, a first run of a tool), and a shift that followed the last
/// period alone let a burst's first period through in full. An attack
/// during such a burst is lowered, not learned (judge.rs): it alerts once
/// the burst has passed unless confirmed benign. Before the first period
/// completes there is no shift (the workload's history is too short to
/// say what its own kind of work is).
///
/// What is recorded: events past the workload's `adapt_min_events`, not
/// matching a fleet signature, with no high-precision indicator (the shift
/// never applies to those) and not a held-back repeat of an alert.
#[derive(Debug, Clone, Default)]
pub struct OwnScores {
    /// The current period's bins, then the last completed one's (empty
    /// until the first event).
    bins: Vec<u32>,
    current: u64,
    /// Events of the last completed period (0: none yet).
    completed: u64,
}

/// The bin of `z` among `bins` 0.25-wide bins from `lo` (out-of-range
/// values in the end bins).
fn quarter_bin(z: f32, lo: f32, bins: usize) -> usize {
    (((z - lo) * 4.0).floor() as isize).clamp(0, bins as isize - 1) as usize
}

const OWN_LO: f32 = -24.0;
const OWN_BINS: usize = 256;

impl OwnScores {
    pub fn add(&mut self, z: f32, period: u64) {
        if period == 0 {
            return;
        }
        if self.bins.is_empty() {
            self.bins = vec![0; 2 * OWN_BINS];
        }
        let i = quarter_bin(z, OWN_LO, OWN_BINS);
        self.bins[i] = self.bins[i].saturating_add(1);
        self.current += 1;
        if self.current >= period {
            self.bins.copy_within(..OWN_BINS, OWN_BINS);
            self.bins[..OWN_BINS].fill(0);
            self.completed = self.current;
            self.current = 0;
        }
    }

    /// Events of the last completed period (0 until one is).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Events the operating point is taken over: the last completed period
    /// and the current one so far (0 until a period has completed).
    pub fn window(&self) -> u64 {
        if self.completed == 0 {
            0
        } else {
            self.completed + self.current
        }
    }

    /// Events of the window in bin `i` (the current period's, then the
    /// last completed one's).
    fn in_bin(&self, i: usize) -> u64 {
        u64::from(self.bins[i]) + u64::from(self.bins[OWN_BINS + i])
    }

    /// Share of the window's events at `logit` or above (to 0.25).
    pub fn flagged_share(&self, logit: f32) -> f64 {
        let n = self.window();
        if n == 0 {
            return 0.0;
        }
        let from = quarter_bin(logit, OWN_LO, OWN_BINS);
        let above: u64 = (from..OWN_BINS).map(|i| self.in_bin(i)).sum();
        above as f64 / n as f64
    }

    /// Log-odds to take off the decision so that at most `budget` of the
    /// window would have reached `logit` (0 before a period completes).
    pub fn shift(&self, budget: f32, logit: f32, max: f32) -> f32 {
        let n = self.window();
        if budget <= 0.0 || n == 0 {
            return 0.0;
        }
        // The most events allowed at `logit` or above, and the next one.
        // (A budget is an f32: 0.0001 × 10,000 is 0.99999997.)
        let k = (f64::from(budget) * n as f64 + 1e-6).floor() as u64 + 1;
        let mut seen = 0u64;
        for i in (0..OWN_BINS).rev() {
            seen += self.in_bin(i);
            if seen >= k {
                let top = OWN_LO + (i as f32 + 1.0) / 4.0;
                return (top - logit).clamp(0.0, max.max(0.0));
            }
        }
        0.0
    }
}

/// A workload's distribution of the classifier's log-odds over what it
/// learned: a histogram of 0.25-wide bins over [-12, 12].
#[derive(Debug, Clone)]
pub struct LogOdds {
    bins: [u32; 96],
    total: u64,
}

impl Default for LogOdds {
    fn default() -> Self {
        Self {
            bins: [0; 96],
            total: 0,
        }
    }
}

impl LogOdds {
    pub fn add(&mut self, logit: f32) {
        let i = quarter_bin(logit, -12.0, 96);
        self.bins[i] = self.bins[i].saturating_add(1);
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (upper edge of its bin).
    pub fn quantile(&self, q: f32) -> f32 {
        let want = (f64::from(q) * self.total as f64).ceil() as u64;
        let mut seen = 0u64;
        for (i, n) in self.bins.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= want.max(1) {
                return (i as f32 + 1.0) / 4.0 - 12.0;
            }
        }
        12.0
    }

    /// The log-odds taken off the classifier's for this workload: how far
    /// its ordinary activity's `q` quantile stands above an even call.
    pub fn offset(&self, q: f32, min_events: u64) -> f32 {
        if self.total < min_events.max(1) {
            return 0.0;
        }
        self.quantile(q).max(0.0)
    }
}

/// Anomaly score from a nearest distance.
pub fn score_from_distance(distance: f32) -> f32 {
    (2.0 * distance).clamp(0.0, 1.0)
}

/// Verdict for a score under `t`.
pub fn verdict(score: f32, t: Thresholds) -> Verdict {
    if score >= t.alert {
        Verdict::Alert
    } else if score >= t.warn {
        Verdict::Warn
    } else {
        Verdict::Ok
    }
}

/// The verdict from both judges (see docs/classifier.md, "Verdict").
///
/// - The anomaly score gives a verdict under the workload's thresholds.
/// - The classifier gives one from P(malicious) under its thresholds.
/// - The event gets the more severe of the two, except that behaviour the
///   workload's baseline already knows (`anomaly < known_below`) is at most
///   warned by the classifier: what was learned during warm-up or confirmed
///   benign by an operator is not raised to an alert on a pattern match
///   alone — while a new attack, by being new, keeps both judges' say.
pub fn combine(
    anomaly_verdict: Verdict,
    anomaly: f32,
    p_malicious: f32,
    warn: f32,
    alert: f32,
    known_below: f32,
) -> Verdict {
    let mut c = if p_malicious >= alert {
        Verdict::Alert
    } else if p_malicious >= warn {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    if anomaly < known_below && c == Verdict::Alert {
        c = Verdict::Warn;
    }
    if (c as i32) > (anomaly_verdict as i32) {
        c
    } else {
        anomaly_verdict
    }
}

pub fn judge(baseline: &Baseline, v: &Embedding, t: Thresholds) -> Judgement {
    judge_keyed(baseline, v, outlier_common::featurize::behaviour_key(v), t)
}

/// [`judge`] for an embedding whose behaviour key is known.
pub fn judge_keyed(baseline: &Baseline, v: &Embedding, key: u64, t: Thresholds) -> Judgement {
    let nearest = baseline
        .nearest_keyed(v, key, 1)
        .first()
        .map(|n| (n.distance, n.index));
    let (score, nearest_distance, nearest_count) = match nearest {
        Some((d, i)) => (score_from_distance(d), d, baseline.count_of(i)),
        None => (1.0, NO_NEIGHBOUR_DISTANCE, 0),
    };
    Judgement {
        score,
        nearest_distance,
        nearest_count,
        baseline_size: baseline.len(),
        verdict: verdict(score, t),
    }
}

/// One-line explanation of an anomaly judgement.
pub fn explain(j: &Judgement, workload: &str) -> String {
    let times = |n: u64| {
        if n == 1 {
            "once".to_string()
        } else {
            format!("{n} times")
        }
    };
    if j.baseline_size == 0 {
        format!("first behaviour seen in workload {workload}")
    } else if j.nearest_distance < 1e-4 {
        format!(
            "known behaviour of {workload}, seen {} before",
            times(j.nearest_count)
        )
    } else {
        format!(
            "unlike all {} known behaviours of {workload} (nearest at cosine distance {:.2})",
            j.baseline_size, j.nearest_distance
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_lineage_is_new_until_learned_or_alerted_on_unconfirmed_three_times() {
        let mut h = WorkloadHistory::default();
        for i in 0..10 {
            h.learn(i, None);
        }
        let l = 99;
        assert!(h.is_new_lineage(l, 10));
        assert!(
            !h.is_new_lineage(l, 11),
            "not before the history is long enough"
        );
        for _ in 1..LINEAGE_ALERTS {
            h.alerted(l);
            assert!(h.is_new_lineage(l, 10));
        }
        h.alerted(l);
        assert!(!h.is_new_lineage(l, 10));
        assert_eq!(h.watched(), 10, "alerts are not learned events");
    }

    use super::*;

    #[test]
    fn seed_formula_and_verdicts() {
        assert_eq!(score_from_distance(0.0), 0.0);
        assert_eq!(score_from_distance(0.36), 0.72);
        assert_eq!(score_from_distance(0.8), 1.0);
        let t = Thresholds {
            warn: 0.5,
            alert: 0.9,
            ..Thresholds::default()
        };
        assert_eq!(verdict(0.02, t), Verdict::Ok);
        assert_eq!(verdict(0.85, t), Verdict::Warn);
        assert_eq!(verdict(0.94, t), Verdict::Alert);
        let dev = Thresholds {
            warn: 0.7,
            alert: 0.95,
            ..Thresholds::default()
        };
        assert_eq!(verdict(0.85, dev), Verdict::Warn);
        assert_eq!(verdict(0.6, dev), Verdict::Ok);
    }

    #[test]
    fn combined_verdict_takes_the_more_severe_but_spares_known_behaviour() {
        use Verdict::*;
        // Classifier alone raises a quiet anomaly score.
        assert_eq!(combine(Ok, 0.3, 0.99, 0.9, 0.95, 0.1), Alert);
        assert_eq!(combine(Ok, 0.3, 0.92, 0.9, 0.95, 0.1), Warn);
        // Anomaly alone.
        assert_eq!(combine(Alert, 1.0, 0.01, 0.9, 0.95, 0.1), Alert);
        assert_eq!(combine(Warn, 0.8, 0.01, 0.9, 0.95, 0.1), Warn);
        // Known behaviour: the classifier can warn, not alert.
        assert_eq!(combine(Ok, 0.02, 0.99, 0.9, 0.95, 0.1), Warn);
        assert_eq!(combine(Ok, 0.02, 0.5, 0.9, 0.95, 0.1), Ok);
    }

    fn signals(anomaly: f32, distance: f32, count: u64, p: f32) -> Signals {
        Signals {
            anomaly,
            nearest_distance: distance,
            nearest_count: count,
            baseline_events: 1000,
            p_malicious: p,
            high_precision: None,
            workload_offset: 0.0,
            p_decision: 0.0,
            new_lineage: false,
            repeat_of_alert: false,
            own_shift: 0.0,
            own_alert_shift: 0.0,
        }
    }

    #[test]
    fn repeated_behaviour_is_not_flagged_by_the_classifier_alone() {
        let d = DecisionConfig::default();
        // A repeat the classifier finds very attack-like: no flag...
        let routine = signals(0.0, 0.0, 40, 0.9999);
        assert_eq!(decide(&routine, &d, d.warn, d.alert).1, Verdict::Ok);
        // ...unless a high-precision indicator fires.
        let shell = Signals {
            high_precision: Some("cmd_dev_tcp"),
            ..routine.clone()
        };
        assert_ne!(decide(&shell, &d, d.warn, d.alert).1, Verdict::Ok);
        // Seen once only: the classifier's evidence counts.
        let once = signals(0.0, 0.0, 1, 0.9999);
        assert!(decide(&once, &d, d.warn, d.alert).0 > decide(&routine, &d, d.warn, d.alert).0);
    }

    #[test]
    fn the_decision_grows_with_each_kind_of_evidence() {
        let d = DecisionConfig::default();
        let base = signals(0.3, 0.15, 3, 0.5);
        let p = |s: &Signals| decide(s, &d, d.warn, d.alert).0;
        let p0 = p(&base);
        assert!(
            p(&Signals {
                anomaly: 1.0,
                ..base.clone()
            }) > p0
        );
        assert!(
            p(&Signals {
                p_malicious: 0.999,
                ..base.clone()
            }) > p0
        );
        assert!(
            p(&Signals {
                new_lineage: true,
                ..base.clone()
            }) > p0
        );
        assert!(
            p(&Signals {
                high_precision: Some("cmd_pipe_to_shell"),
                ..base.clone()
            }) > p0
        );
        // What is ordinary for the workload counts against the classifier.
        assert!(
            p(&Signals {
                workload_offset: 4.0,
                ..base.clone()
            }) < p0
        );
        // ...in proportion to how close the event stands to what the
        // workload knows: nothing off what is unlike all of it.
        let near = Signals {
            anomaly: 0.1,
            ..base.clone()
        };
        let novel = Signals {
            anomaly: 1.0,
            ..base.clone()
        };
        let off = |s: &Signals| {
            decision_logit(s, &d)
                - decision_logit(
                    &Signals {
                        workload_offset: 4.0,
                        ..s.clone()
                    },
                    &d,
                )
        };
        assert!(
            (off(&near) - 0.9 * 4.0 * d.classifier).abs() < 1e-4,
            "{}",
            off(&near)
        );
        assert_eq!(off(&novel), 0.0);
        // Verdicts follow the thresholds on P.
        let (pd, v) = decide(&base, &d, 0.0, 1.0);
        assert!(pd > 0.0);
        assert_eq!(v, Verdict::Warn);
    }

    #[test]
    fn workload_offset_is_the_quantile_above_an_even_call() {
        let mut h = LogOdds::default();
        assert_eq!(h.offset(0.99, 10), 0.0);
        for i in 0..1000 {
            // 2% of the workload's events look very attack-like (log-odds 5).
            h.add(if i % 50 == 0 { 5.0 } else { -6.0 });
        }
        assert_eq!(h.total(), 1000);
        let off = h.offset(0.99, 10);
        assert!((5.0..=5.25).contains(&off), "{off}");
        // A quiet workload gets no offset.
        let mut q = LogOdds::default();
        (0..1000).for_each(|_| q.add(-6.0));
        assert_eq!(q.offset(0.99, 10), 0.0);
        // Too short a history says nothing.
        assert_eq!(h.offset(0.99, 5000), 0.0);
    }

    #[test]
    fn the_alert_budget_moves_the_alert_point_only() {
        let d = DecisionConfig::default();
        let s = signals(1.0, 0.5, 0, 0.99);
        let (p, v) = decide(&s, &d, d.warn, d.alert);
        assert!(p >= d.alert && v == Verdict::Alert, "{p}");
        // Shifted by the alert budget: still warned, with the same P.
        let a = Signals {
            own_alert_shift: logit(p) - logit(d.alert) + 0.5,
            ..s.clone()
        };
        assert_eq!(decide(&a, &d, d.warn, d.alert), (p, Verdict::Warn));
        // The warn point's shift moves the alert point too.
        let w = Signals {
            own_shift: logit(p) - logit(d.alert) + 0.5,
            ..s.clone()
        };
        assert_ne!(decide(&w, &d, d.warn, d.alert).1, Verdict::Alert);
        // A high-precision indicator is not shifted.
        let hp = Signals {
            high_precision: Some("cmd_dev_tcp"),
            ..a.clone()
        };
        assert_eq!(decide(&hp, &d, d.warn, d.alert).1, Verdict::Alert);
    }

    #[test]
    fn own_operating_point_comes_from_the_last_period_and_the_current_one() {
        let mut o = OwnScores::default();
        let period = 1_000;
        // A period with 5% of its events at log-odds 3 (flagged at P = 0.5).
        for i in 0..999 {
            o.add(if i % 20 == 0 { 3.0 } else { -5.0 }, period);
        }
        assert_eq!(o.shift(0.01, 0.0, 6.0), 0.0, "no period completed yet");
        o.add(-5.0, period);
        assert_eq!(o.completed(), 1_000);
        assert!((o.flagged_share(0.0) - 0.05).abs() < 1e-9);
        let s = o.shift(0.01, 0.0, 6.0);
        assert!(s > 3.0 && s <= 3.25, "{s}");
        // Within budget: no shift; a cap bounds it; budget 0 is off.
        assert_eq!(o.shift(0.1, 0.0, 6.0), 0.0);
        assert_eq!(o.shift(0.01, 0.0, 1.0), 1.0);
        assert_eq!(o.shift(0.0, 0.0, 6.0), 0.0);
        // A burst in the current period moves the shift while it happens
        // (1% of 1,010 events is 10: the eleventh at 9 sets it)...
        for _ in 0..10 {
            o.add(9.0, period);
        }
        assert_eq!(o.window(), 1_010);
        assert!(o.shift(0.01, 0.0, 20.0) <= 3.25);
        o.add(9.0, period);
        assert!(o.shift(0.01, 0.0, 20.0) > 9.0);
        assert!((o.flagged_share(0.0) - 61.0 / 1_011.0).abs() < 1e-9);
        // ...and while its period is the last completed one; a quiet period
        // then clears it.
        for _ in 0..489 {
            o.add(9.0, period);
        }
        for _ in 0..500 {
            o.add(-5.0, period);
        }
        assert_eq!(o.window(), 1_000);
        assert!(o.shift(0.01, 0.0, 20.0) > 9.0);
        for _ in 0..1_000 {
            o.add(-5.0, period);
        }
        assert_eq!(o.shift(0.01, 0.0, 6.0), 0.0);
        // Out-of-range log-odds land in the end bins.
        o.add(100.0, 2);
        o.add(-100.0, 2);
        assert_eq!(o.shift(0.4, 0.0, 50.0), 40.0);
        // A budget allows its share: one of two at 0.5.
        assert_eq!(o.shift(0.5, 0.0, 50.0), 0.0);
    }

    #[test]
    fn lineages_are_new_only_once_the_history_is_long_enough() {
        let mut h = WorkloadHistory::default();
        assert!(!h.is_new_lineage(7, 3));
        for k in [1, 2, 3] {
            h.learn(k, Some(0.0));
        }
        assert!(h.is_new_lineage(7, 3));
        assert!(!h.is_new_lineage(2, 3));
        h.learn(7, None);
        assert!(!h.is_new_lineage(7, 3));
    }

    #[test]
    fn empty_baseline_scores_one() {
        let j = judge(&Baseline::default(), &[0.0; 128], Thresholds::default());
        assert_eq!(j.score, 1.0);
        assert_eq!(j.verdict, Verdict::Alert);
        assert!(explain(&j, "b").contains("first behaviour"));
    }
}
