//! Scoring one event against its workload's baseline (the first seed's rule):
//! score = min(1, 2 × cosine distance to the nearest known behaviour); a
//! workload with no baseline scores 1.0.

use outlier_common::featurize::Embedding;
use outlier_proto::Verdict;

use crate::baseline::Baseline;
use crate::config::Thresholds;

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

    #[test]
    fn empty_baseline_scores_one() {
        let j = judge(&Baseline::default(), &[0.0; 128], Thresholds::default());
        assert_eq!(j.score, 1.0);
        assert_eq!(j.verdict, Verdict::Alert);
        assert!(explain(&j, "b").contains("first behaviour"));
    }
}
