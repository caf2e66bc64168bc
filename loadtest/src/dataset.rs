//! Training data for the threat classifier: the fleet simulator's labelled
//! events turned into the classifier's stateful feature vectors, exactly as
//! the scorer computes them at run time.
//!
//! Output (in one folder): `features.f32` (row-major little-endian f32,
//! `rows × N_FEATURES`), `labels.tsv` (one row per vector: class index,
//! class, technique, attack id, context, workload) and `dataset.json`
//! (feature and class names, shape, seed).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use outlier_classifier::{CLASSES, Extractor, N_FEATURES, class_of, features};
use outlier_common::json::to_event;

use crate::eval::{AttackTest, Capture, build_streams, event_of};
use crate::sim::{Corpus, SimConfig, Simulator};

/// Counts of what was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub rows: usize,
    pub malicious: usize,
    /// Rows from real captures.
    pub real: usize,
}

/// Real captures in the training data: the benign activity of real hosts
/// (`scripts/record-benign`) up to `until` of each capture's time span —
/// never the part `loadtest eval` validates on — with attacks of the corpus
/// injected into the last `1 - split` of that window.
pub struct RealRows {
    pub captures: Vec<Capture>,
    pub until: f64,
    /// Attacks injected (every k-th of the corpus).
    pub attacks: usize,
}

/// Simulates `events` events and writes their features and labels to `dir`,
/// then the rows of the real captures, if any.
pub fn write(
    cfg: SimConfig,
    corpus: Arc<Corpus>,
    events: usize,
    dir: &Path,
    real: Option<RealRows>,
) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut x = std::io::BufWriter::new(std::fs::File::create(dir.join("features.f32"))?);
    let mut y = std::io::BufWriter::new(std::fs::File::create(dir.join("labels.tsv"))?);
    writeln!(y, "class\tname\ttechnique\tattack_id\tcontext\tworkload")?;
    let seed = cfg.seed;
    let mut extractor = Extractor::default();
    let mut out = Written::default();
    for (i, le) in Simulator::new(cfg, corpus.clone()).take(events).enumerate() {
        let label = le.label;
        let ev = to_event(le.event, 0, || format!("row-{i}"))
            .map_err(|e| anyhow::anyhow!("simulated event {i} does not convert: {e}"))?;
        let Some(class) = class_of(label.malicious, &label.tactic) else {
            anyhow::bail!("event {i}: tactic {:?} has no class", label.tactic);
        };
        let f = extractor.observe(&ev);
        for v in f.values {
            x.write_all(&v.to_le_bytes())?;
        }
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        writeln!(
            y,
            "{class}\t{}\t{}\t{}\t{}\t{}",
            CLASSES[class],
            clean(&label.technique),
            clean(&label.attack_id),
            clean(&label.context),
            clean(&ev.workload)
        )?;
        out.rows += 1;
        out.malicious += usize::from(label.malicious);
    }
    if let Some(real) = real {
        // Every k-th attack of the corpus, `real.attacks` of them.
        let tests: Vec<AttackTest> = match corpus.attacks.len().checked_div(real.attacks) {
            None => Vec::new(),
            Some(k) => corpus
                .attacks
                .iter()
                .step_by(k.max(1))
                .take(real.attacks)
                .map(|a| AttackTest {
                    attack: a.clone(),
                    context: String::new(),
                    source: "corpus".into(),
                })
                .collect(),
        };
        let window: Vec<Capture> = real.captures.iter().map(|c| c.until(real.until)).collect();
        let streams = build_streams(&window, tests, 0.3, "train-real", seed);
        let mut extractor = Extractor::default();
        for (i, e) in streams
            .baseline
            .iter()
            .chain(&streams.validation)
            .enumerate()
        {
            let Some(ev) = event_of(e, i) else { continue };
            let t = &e.truth;
            let Some(class) = class_of(t.malicious, &t.tactic) else {
                anyhow::bail!("real row {i}: tactic {:?} has no class", t.tactic);
            };
            let f = extractor.observe(&ev);
            for v in f.values {
                x.write_all(&v.to_le_bytes())?;
            }
            let clean = |s: &str| s.replace(['\t', '\n'], " ");
            let attack_id = t
                .test
                .map(|i| streams.tests[i].attack.id.clone())
                .unwrap_or_default();
            writeln!(
                y,
                "{class}\t{}\t{}\t{}\t{}\treal/{}",
                CLASSES[class],
                clean(&t.technique),
                clean(&attack_id),
                if t.malicious {
                    clean(&t.context)
                } else {
                    "real".into()
                },
                clean(&ev.host)
            )?;
            out.rows += 1;
            out.real += 1;
            out.malicious += usize::from(t.malicious);
        }
    }
    x.flush()?;
    y.flush()?;
    let meta = serde_json::json!({
        "rows": out.rows,
        "n_features": N_FEATURES,
        "feature_names": features::names(),
        "classes": CLASSES,
        "seed": seed,
    });
    std::fs::write(
        dir.join("dataset.json"),
        serde_json::to_string_pretty(&meta)?,
    )?;
    Ok(out)
}
