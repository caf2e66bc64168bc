//! Loading the threat classifier the scorer runs (see docs/classifier.md).

use std::sync::Arc;

use outlier_classifier::{Classifier, Limits, Model, load_checked};

use crate::config::ClassifierConfig;

/// The model trained by `scripts/train` and shipped in the repository,
/// built into the scorer so a plain binary needs no model file.
pub const SHIPPED_MODEL: &str = include_str!("../../models/classifier.json");

/// Loads the configured model (the built-in one unless `model` names a file).
pub fn load_model(cfg: &ClassifierConfig) -> Result<Model, String> {
    if cfg.model.is_empty() {
        return load_checked(SHIPPED_MODEL).map_err(|e| format!("built-in classifier model: {e}"));
    }
    let text = std::fs::read_to_string(&cfg.model)
        .map_err(|e| format!("scoring.classifier.model = {:?}: {e}", cfg.model))?;
    load_checked(&text).map_err(|e| format!("scoring.classifier.model = {:?}: {e}", cfg.model))
}

/// The classifier for one worker, or `None` when disabled.
pub fn classifier(cfg: &ClassifierConfig) -> Result<Option<Classifier>, String> {
    if !cfg.enabled {
        return Ok(None);
    }
    let model = load_model(cfg)?;
    tracing::info!(
        trees = model.n_trees(),
        features = model.n_features(),
        classes = model.meta.classes.len(),
        warn_threshold = model.meta.warn_threshold,
        alert_threshold = model.meta.alert_threshold,
        source = if cfg.model.is_empty() {
            "built-in"
        } else {
            cfg.model.as_str()
        },
        "threat classifier loaded"
    );
    let limits = Limits {
        hosts: cfg.max_hosts.max(1),
        hosts_per_org: cfg.max_hosts_per_org.max(1),
        ..Limits::default()
    };
    Ok(Some(Classifier::new(Arc::new(model), limits)))
}
