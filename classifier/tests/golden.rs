//! The Rust evaluation of the shipped model against XGBoost itself: margins
//! and exact TreeSHAP values (`pred_contribs`) that `scripts/train` recorded
//! for held-out rows of every class.

use outlier_classifier::{N_FEATURES, load_checked};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    rows: Vec<Vec<f32>>,
    margins: Vec<Vec<f32>>,
    /// rows × classes × (features + bias)
    contribs: Vec<Vec<Vec<f32>>>,
}

fn load() -> (outlier_classifier::Model, Golden) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/");
    let model = load_checked(&std::fs::read_to_string(format!("{root}classifier.json")).unwrap())
        .expect("the shipped model matches this build's features");
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}classifier.golden.json")).unwrap(),
    )
    .unwrap();
    (model, golden)
}

#[test]
fn margins_equal_xgboost() {
    let (model, g) = load();
    assert!(g.rows.len() >= 20);
    for (x, want) in g.rows.iter().zip(&g.margins) {
        assert_eq!(x.len(), N_FEATURES);
        let got = model.margins(x);
        for (a, b) in got.iter().zip(want) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "margin {a} vs XGBoost {b}"
            );
        }
    }
}

#[test]
fn tree_shap_equals_xgboost_pred_contribs() {
    let (model, g) = load();
    let classes = model.meta.classes.len();
    let mut checked = 0;
    for (x, want) in g.rows.iter().zip(&g.contribs) {
        for (class, want) in want.iter().enumerate().take(classes) {
            let phi = model.shap(x, class);
            assert_eq!(phi.len(), N_FEATURES + 1);
            for (i, (a, b)) in phi.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4 + 1e-3 * b.abs(),
                    "class {class} feature {i}: {a} vs XGBoost {b}"
                );
            }
            // Local accuracy: the values sum to the margin.
            let sum: f32 = phi.iter().sum();
            let m = model.margins(x)[class];
            assert!((sum - m).abs() < 1e-3 * (1.0 + m.abs()), "{sum} vs {m}");
            checked += 1;
        }
    }
    assert!(checked >= 20 * classes);
}

#[test]
fn probabilities_are_calibrated_softmax() {
    let (model, g) = load();
    let t = f64::from(model.meta.temperature);
    assert!(t > 0.0 && t.is_finite());
    for (x, margins) in g.rows.iter().zip(&g.margins) {
        let p = model.predict(x);
        let sum: f32 = p.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4);
        // The fitted temperature applied to XGBoost's own margins.
        let max = margins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = margins
            .iter()
            .map(|m| (f64::from(m - max) / t).exp())
            .collect();
        let z: f64 = e.iter().sum();
        for (got, want) in p.probs.iter().zip(e.iter().map(|v| v / z)) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-4,
                "probability {got} vs softmax(margin / {t}) {want}"
            );
        }
        assert!((p.p_malicious - (1.0 - p.probs[0])).abs() < 1e-6);
        assert_ne!(p.threat_class, 0);
    }
    assert!(model.meta.warn_threshold <= model.meta.alert_threshold);
}

#[test]
fn a_model_for_other_features_is_refused() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/classifier.json");
    let text = std::fs::read_to_string(root).unwrap();
    let renamed = text.replacen("\"kind_exec\"", "\"kind_execve\"", 1);
    let err = load_checked(&renamed).unwrap_err().to_string();
    assert!(err.contains("other features"), "{err}");
    assert!(load_checked("{\"meta\":{}}").is_err());
}
