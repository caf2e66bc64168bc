//! Outlier's threat classifier.
//!
//! For every event: stateful features from the host's recent history
//! ([`features`]), a gradient-boosted tree ensemble trained by XGBoost and
//! evaluated in Rust ([`model`]), calibrated class probabilities over
//! `benign` and MITRE ATT&CK tactics, and — for events worth a person's
//! attention — exact TreeSHAP values turned into short sentences and an
//! ATT&CK technique ([`explain`]).

pub mod explain;
pub mod features;
pub mod lexicon;
pub mod model;
pub mod state;

use std::sync::Arc;

use outlier_proto::v1::Event;

use features::{CmdDerived, Feature, File};
use lexicon::indicator;

pub use features::{Extractor, Features, N_FEATURES};
pub use model::{Model, ModelError, Prediction};
pub use state::Limits;

/// Parses a model file and checks its feature names against the extractor's.
pub fn load_checked(text: &str) -> Result<Model, ModelError> {
    let m = Model::from_json(text)?;
    if m.meta.feature_names.as_slice() != features::names() {
        let first = m
            .meta
            .feature_names
            .iter()
            .zip(features::names())
            .position(|(a, b)| a != b)
            .unwrap_or(m.meta.feature_names.len().min(N_FEATURES));
        return Err(ModelError::Invalid(format!(
            "the model was trained on other features than this build extracts (first difference at #{first}); retrain with scripts/train"
        )));
    }
    if m.meta.classes.first().map(String::as_str) != Some("benign") {
        return Err(ModelError::Invalid("class 0 must be `benign`".into()));
    }
    Ok(m)
}

/// One feature's share of a classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub feature: String,
    pub value: f32,
    pub shap: f32,
    pub sentence: String,
}

/// What the classifier says of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// `benign`, or the ATT&CK tactic the event most likely serves.
    pub category: String,
    /// ATT&CK tactic short name (empty for benign).
    pub tactic: String,
    /// ATT&CK technique, when the features that drove the call point at one.
    pub technique: String,
    /// Calibrated probability of `category`.
    pub confidence: f32,
    /// 1 − P(benign).
    pub p_malicious: f32,
    /// Top contributions (empty unless explained).
    pub contributions: Vec<Contribution>,
    /// The contributions' sentences, joined.
    pub explanation: String,
}

/// Classifier with its per-host state. One per scorer worker.
pub struct Classifier {
    model: Arc<Model>,
    extractor: Extractor,
}

impl Classifier {
    pub fn new(model: Arc<Model>, limits: Limits) -> Self {
        Self {
            model,
            extractor: Extractor::new(limits),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    /// Host state dropped to stay within [`Limits`] since the last call.
    pub fn drain_dropped(&mut self) -> Vec<state::Dropped> {
        self.extractor.drain_dropped()
    }

    /// Features and class probabilities of `ev`; the host's state takes it in.
    pub fn classify(&mut self, ev: &Event) -> (Features, Prediction) {
        let f = self.extractor.observe(ev);
        let p = self.model.predict(&f.values);
        (f, p)
    }

    /// The assessment without an explanation (cheap): the most likely
    /// malicious class when P(malicious) ≥ ½, else `benign`; the confidence
    /// is the calibrated probability of that category. (Verdicts use the
    /// tuned thresholds on P(malicious), not this category.)
    pub fn assess(&self, p: &Prediction) -> Assessment {
        let class = if p.p_malicious >= 0.5 {
            p.threat_class
        } else {
            0
        };
        let category = self.model.meta.classes[class].clone();
        Assessment {
            tactic: if class == 0 {
                String::new()
            } else {
                category.clone()
            },
            category,
            technique: String::new(),
            confidence: if class == 0 {
                1.0 - p.p_malicious
            } else {
                p.probs[class]
            },
            p_malicious: p.p_malicious,
            contributions: Vec::new(),
            explanation: String::new(),
        }
    }

    /// The assessment with exact SHAP contributions for the most likely
    /// malicious class (what a person looking at a flagged event wants to
    /// know is what made it look malicious): the `top` strongest present
    /// features pushing towards it become sentences.
    ///
    /// The technique and tactic are named from the evidence, not from the
    /// class: a payload installed in a start-up location or the program a
    /// download runs first ([`explain::leading_technique`]), else the
    /// present feature that points at an ATT&CK technique and
    /// contributes most (a [`HIGH_PRECISION`] indicator first, then other
    /// specific evidence — a cron table written, a firewall flushed — then
    /// generic evidence such as a shell or /tmp), its technique and that
    /// technique's tactic. The
    /// class's tactic is the fallback when nothing points at a technique.
    /// Cross-validated by technique on the training corpus, the class names
    /// the right tactic for 25% of attacks, the evidence for 42%
    /// (docs/detection.md).
    pub fn explain(&self, f: &Features, p: &Prediction, top: usize) -> Assessment {
        let mut a = self.assess(p);
        let class = p.threat_class;
        let phi = self.model.shap(&f.values, class);
        let names = features::names();
        let mut evidence: Vec<(u8, f32, &'static str)> = (0..N_FEATURES)
            .filter(|&i| explain::present(i, f.values[i]))
            .filter_map(|i| {
                let t = explain::technique(i, &f.context);
                let tier = explain::naming_tier(i, &f.context);
                (!explain::tactic_of_technique(t).is_empty()).then_some((tier, phi[i], t))
            })
            .collect();
        // What the command line's arguments name (a password policy read,
        // the metadata service asked for credentials) says what the program
        // is used for here: first among the specific evidence.
        let t = f.context.command_technique;
        if !explain::tactic_of_technique(t).is_empty() {
            evidence.push((1, f32::INFINITY, t));
        }
        // Then a shell started through the command's arguments (`find .
        // -exec /bin/sh`): execution, whatever the program is for.
        if explain::shell_through_arguments(f) {
            evidence.push((1, f32::INFINITY, "T1059.004"));
        }
        // Then a program started whose purpose is a technique (`hostname`,
        // `tcpdump`, `poweroff`): it says what is being done more directly
        // than the features.
        if f.get(features::Head::KindExec) != 0.0 {
            let t = lexicon::program_technique(&f.context.comm);
            if !explain::tactic_of_technique(t).is_empty() {
                evidence.push((1, f32::INFINITY, t));
            }
        }
        // Last, a command interpreter started (`fish`, `busybox ash`,
        // `python3`) is execution when nothing else says what for: it
        // ranks after all the evidence, and takes the place of the class,
        // whose guess for a technique it never saw is mostly the nearest
        // one it did.
        if f.get(features::Head::KindExec) != 0.0 {
            let t = lexicon::interpreter_technique(&f.context.comm);
            if !t.is_empty() {
                evidence.push((5, f32::NEG_INFINITY, t));
            }
        }
        // A payload installed in a start-up location, or the program a
        // download runs: before everything else.
        if let Some(t) = explain::leading_technique(f) {
            evidence.push((0, f32::INFINITY, t));
        }
        // High-precision indicators, then other specific evidence, then
        // generic evidence; within a tier the strongest contribution.
        evidence.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.total_cmp(&x.1)));
        let (technique, tactic) = match evidence.first() {
            Some(&(_, _, t)) => (t.to_string(), explain::tactic_of_technique(t).to_string()),
            None => (String::new(), self.model.meta.classes[class].clone()),
        };
        a.technique = technique;
        a.tactic = tactic;
        let mut order: Vec<usize> = (0..N_FEATURES)
            .filter(|&i| phi[i] > 0.0 && explain::present(i, f.values[i]))
            .collect();
        order.sort_by(|&x, &y| phi[y].total_cmp(&phi[x]));
        order.truncate(top);
        a.contributions = order
            .iter()
            .map(|&i| Contribution {
                feature: names[i].clone(),
                value: f.values[i],
                shap: phi[i],
                sentence: explain::sentence(i, f.values[i], &f.context),
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        a.explanation = a
            .contributions
            .iter()
            .map(|c| c.sentence.as_str())
            .filter(|s| seen.insert(*s))
            .collect::<Vec<_>>()
            .join("; ");
        a
    }
}

/// The classes the shipped model is trained on: `benign`, then the ATT&CK
/// tactics the training corpora cover (initial access folds into execution:
/// on a host, the first thing an intrusion does is run something).
pub const CLASSES: &[&str] = &[
    "benign",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
];

/// Class index of a label's tactic (`None` for an unknown tactic).
pub fn class_of(malicious: bool, tactic: &str) -> Option<usize> {
    if !malicious {
        return Some(0);
    }
    let t = if tactic == "initial-access" {
        "execution"
    } else {
        tactic
    };
    CLASSES.iter().position(|c| *c == t).filter(|&i| i > 0)
}

/// Evidence that is rare in benign activity on servers: a shell wired to a
/// socket, a download piped into a shell, a netcat that executes for its
/// peer, history wiped, a miner, a preload library or an SSH key or a
/// password file written. The verdict lets the classifier flag behaviour a
/// workload has shown repeatedly only when one of these fires
/// (docs/detection.md): a repeat of ordinary work is not an alarm because
/// its command line resembles an attack. [`high_precision`] adds one that
/// is not a feature: a start-up location written outside a provisioning
/// lineage.
pub const HIGH_PRECISION: &[Feature] = &[
    Feature::Indicator(indicator("cmd_dev_tcp")),
    Feature::Indicator(indicator("cmd_pipe_to_shell")),
    Feature::Indicator(indicator("cmd_fd_redirect")),
    Feature::Indicator(indicator("cmd_nc_exec")),
    Feature::Indicator(indicator("cmd_mkfifo")),
    Feature::Indicator(indicator("cmd_history")),
    Feature::Indicator(indicator("cmd_mining")),
    Feature::CmdDerived(CmdDerived::DownloadExec),
    Feature::File(File::LdPreload),
    Feature::File(File::AuthorizedKeys),
    Feature::File(File::Shadow),
    Feature::File(File::Sudoers),
];

/// The first high-precision indicator present in `f`, by name, if any. File
/// indicators count for writes only: reading the password file is what
/// every PAM login does. After them, a start-up location written
/// (`lexicon::startup_location`: a cron file, a unit, an init script, a
/// shell start-up file, a PAM or udev rule …) by a lineage that does not
/// install software or provision accounts (`Context::provisioning`):
/// `startup_location_written`. It is not a feature of the model (the
/// model was trained without it), only of the decision; the file's own
/// features (`file_cron`, `file_systemd`, `file_profile`) still name its
/// technique.
pub fn high_precision(f: &Features) -> Option<&'static str> {
    let writes = f.get(File::Write) > 0.0 || f.get(File::Create) > 0.0;
    HIGH_PRECISION
        .iter()
        .find(|h| f.values[h.slot()] > 0.0 && (writes || !matches!(h, Feature::File(_))))
        .map(|h| features::names()[h.slot()].as_str())
        .or_else(|| {
            (writes && !f.context.provisioning && lexicon::startup_location(&f.context.path))
                .then_some("startup_location_written")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_precision_indicators_name_themselves_and_files_count_for_writes() {
        let mut f = Features {
            values: [0.0; N_FEATURES],
            context: Default::default(),
        };
        assert_eq!(high_precision(&f), None);
        // Reading the password file is what every PAM login does.
        f.values[File::Shadow.slot()] = 1.0;
        assert_eq!(high_precision(&f), None);
        f.values[File::Write.slot()] = 1.0;
        assert_eq!(high_precision(&f), Some("file_shadow"));
        let mut g = Features {
            values: [0.0; N_FEATURES],
            context: Default::default(),
        };
        g.values[Feature::Indicator(indicator("cmd_dev_tcp")).slot()] = 1.0;
        assert_eq!(high_precision(&g), Some("cmd_dev_tcp"));
    }
}
