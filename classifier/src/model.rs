//! The gradient-boosted tree ensemble: loading XGBoost's JSON model,
//! inference, calibration, and exact TreeSHAP.
//!
//! The trees are trained by XGBoost (`scripts/train`, see docs/classifier.md)
//! and evaluated here in plain Rust: the nodes of every tree are laid out
//! flat, a split sends `x < threshold` left (XGBoost's rule, on f32), and a
//! multi-class model adds each tree's leaf to its class's margin.
//!
//! Explanations are exact SHAP values computed with the polynomial-time
//! TreeSHAP algorithm of Lundberg, Erion and Lee (2018, "Consistent
//! individualized feature attribution for tree ensembles", Algorithm 2),
//! with node covers (XGBoost's hessian sums) as the background distribution —
//! the same values as XGBoost's `pred_contribs`, which the tests check against.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("model file: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ModelError {
    ModelError::Invalid(msg.into())
}

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u32,
    /// Split threshold, or the leaf value for a leaf.
    value: f32,
    left: u32,
    right: u32,
    default_left: bool,
    cover: f32,
}

#[derive(Debug, Clone)]
struct Tree {
    class: usize,
    nodes: Vec<Node>,
    max_depth: usize,
    /// Cover-weighted mean leaf value (the tree's SHAP base value).
    expected: f64,
}

/// A node of the branch-free layout: children are adjacent (`left`,
/// `left + 1`), a leaf points at itself with a NaN threshold (no value
/// compares `>=` to NaN, so it stays put).
#[derive(Debug, Clone, Copy)]
struct FastNode {
    threshold: f32,
    feature: u32,
    left: u32,
}

/// All trees in the branch-free layout, for inference: every tree is walked
/// a fixed number of steps, `left + (x >= threshold)`, eight trees at a time,
/// so the CPU overlaps the trees' loads instead of mispredicting branches.
#[derive(Debug, Clone, Default)]
struct Fast {
    nodes: Vec<FastNode>,
    leaf_value: Vec<f32>,
    roots: Vec<u32>,
    depth: Vec<u8>,
    class: Vec<u16>,
}

impl Fast {
    fn build(trees: &[Tree]) -> Self {
        let mut f = Fast::default();
        for t in trees {
            let base = f.nodes.len() as u32;
            let n = t.nodes.len();
            f.nodes.resize(
                f.nodes.len() + n,
                FastNode {
                    threshold: f32::NAN,
                    feature: 0,
                    left: 0,
                },
            );
            f.leaf_value.resize(f.nodes.len(), 0.0);
            let mut queue = std::collections::VecDeque::from([(0usize, base)]);
            let mut next = base + 1;
            while let Some((old, new)) = queue.pop_front() {
                let node = t.nodes[old];
                if node.left == LEAF {
                    f.nodes[new as usize] = FastNode {
                        threshold: f32::NAN,
                        feature: 0,
                        left: new,
                    };
                    f.leaf_value[new as usize] = node.value;
                } else {
                    f.nodes[new as usize] = FastNode {
                        threshold: node.value,
                        feature: node.feature,
                        left: next,
                    };
                    queue.push_back((node.left as usize, next));
                    queue.push_back((node.right as usize, next + 1));
                    next += 2;
                }
            }
            f.roots.push(base);
            f.depth.push(t.max_depth.min(255) as u8);
            f.class.push(t.class as u16);
        }
        f
    }
}

/// Settings stored with the trees by the training script.
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    /// Feature names, in vector order; must equal the extractor's.
    pub feature_names: Vec<String>,
    /// Class names: `benign` first, then ATT&CK tactics.
    pub classes: Vec<String>,
    /// Softmax temperature fitted on the validation split.
    pub temperature: f32,
    /// P(malicious) at or above which the classifier warns / alerts.
    pub warn_threshold: f32,
    pub alert_threshold: f32,
    /// Training provenance (seed, corpus digests, metrics), kept for `describe`.
    #[serde(default)]
    pub training: Value,
}

/// A loaded ensemble.
#[derive(Debug, Clone)]
pub struct Model {
    pub meta: Meta,
    trees: Vec<Tree>,
    base_margin: Vec<f32>,
    n_features: usize,
    /// Tree indices per class.
    by_class: Vec<Vec<usize>>,
    fast: Fast,
}

/// Class probabilities of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Calibrated probability per class (same order as `Meta::classes`).
    pub probs: Vec<f32>,
    /// The most likely class.
    pub class: usize,
    /// Most likely malicious class (never 0 = benign).
    pub threat_class: usize,
    /// 1 − P(benign).
    pub p_malicious: f32,
}

fn as_f32s(v: &Value, what: &str) -> Result<Vec<f32>, ModelError> {
    v.as_array()
        .ok_or_else(|| invalid(format!("{what} is not an array")))?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| invalid(format!("{what}: not a number")))
        })
        .collect()
}

fn as_i64s(v: &Value, what: &str) -> Result<Vec<i64>, ModelError> {
    v.as_array()
        .ok_or_else(|| invalid(format!("{what} is not an array")))?
        .iter()
        .map(|x| {
            x.as_i64()
                .or_else(|| x.as_bool().map(i64::from))
                .ok_or_else(|| invalid(format!("{what}: not an integer")))
        })
        .collect()
}

/// `"5E-1"`, `"[1E-1,2E-1]"` or a number → per-class values.
fn parse_base_score(v: &Value, classes: usize) -> Result<Vec<f32>, ModelError> {
    let s = match v {
        Value::String(s) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(invalid("base_score has an unknown shape")),
    };
    let vals: Vec<f32> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .map_err(|e| invalid(format!("base_score: {e}")))
        })
        .collect::<Result<_, _>>()?;
    match vals.len() {
        1 => Ok(vec![vals[0]; classes]),
        n if n == classes => Ok(vals),
        n => Err(invalid(format!(
            "base_score has {n} values for {classes} classes"
        ))),
    }
}

impl Model {
    /// Parses the shipped model file: `{"meta": {...}, "xgboost": <XGBoost JSON>}`.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_str(text)?;
        let meta: Meta = serde_json::from_value(
            root.get("meta")
                .cloned()
                .ok_or_else(|| invalid("no meta"))?,
        )?;
        let learner = root
            .pointer("/xgboost/learner")
            .ok_or_else(|| invalid("no xgboost.learner"))?;
        let n_classes = meta.classes.len();
        let params = learner
            .get("learner_model_param")
            .ok_or_else(|| invalid("no learner_model_param"))?;
        let num_class: usize = params
            .get("num_class")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("num_class missing"))?;
        if num_class != n_classes {
            return Err(invalid(format!(
                "model has {num_class} classes, meta names {n_classes}"
            )));
        }
        let n_features: usize = params
            .get("num_feature")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("num_feature missing"))?;
        if n_features != meta.feature_names.len() {
            return Err(invalid("num_feature differs from the feature names"));
        }
        let base_margin = parse_base_score(
            params
                .get("base_score")
                .ok_or_else(|| invalid("base_score missing"))?,
            n_classes,
        )?;
        let model = learner
            .pointer("/gradient_booster/model")
            .ok_or_else(|| invalid("no gradient_booster.model (only gbtree is supported)"))?;
        let tree_info = as_i64s(
            model
                .get("tree_info")
                .ok_or_else(|| invalid("no tree_info"))?,
            "tree_info",
        )?;
        let trees_json = model
            .get("trees")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no trees"))?;
        if trees_json.len() != tree_info.len() {
            return Err(invalid("trees and tree_info differ in length"));
        }
        let mut trees = Vec::with_capacity(trees_json.len());
        for (t, (tj, &class)) in trees_json.iter().zip(&tree_info).enumerate() {
            let field = |name: &str| {
                tj.get(name)
                    .ok_or_else(|| invalid(format!("tree {t}: no {name}")))
            };
            let left = as_i64s(field("left_children")?, "left_children")?;
            let right = as_i64s(field("right_children")?, "right_children")?;
            let feat = as_i64s(field("split_indices")?, "split_indices")?;
            let cond = as_f32s(field("split_conditions")?, "split_conditions")?;
            let dleft = as_i64s(field("default_left")?, "default_left")?;
            let cover = as_f32s(field("sum_hessian")?, "sum_hessian")?;
            let n = left.len();
            if [
                right.len(),
                feat.len(),
                cond.len(),
                dleft.len(),
                cover.len(),
            ]
            .iter()
            .any(|&l| l != n)
            {
                return Err(invalid(format!("tree {t}: arrays differ in length")));
            }
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                let leaf = left[i] < 0;
                if !leaf {
                    let ok = |c: i64| c > 0 && (c as usize) < n;
                    if !ok(left[i])
                        || !ok(right[i])
                        || feat[i] < 0
                        || feat[i] as usize >= n_features
                    {
                        return Err(invalid(format!("tree {t}: node {i} is malformed")));
                    }
                }
                nodes.push(Node {
                    feature: if leaf { LEAF } else { feat[i] as u32 },
                    value: cond[i],
                    left: if leaf { LEAF } else { left[i] as u32 },
                    right: if leaf { LEAF } else { right[i] as u32 },
                    default_left: dleft[i] != 0,
                    cover: cover[i],
                });
            }
            if class < 0 || class as usize >= n_classes {
                return Err(invalid(format!("tree {t}: class {class} out of range")));
            }
            let max_depth =
                depth(&nodes, 0, 0).ok_or_else(|| invalid(format!("tree {t}: cyclic")))?;
            let expected = expected_value(&nodes, 0);
            trees.push(Tree {
                class: class as usize,
                nodes,
                max_depth,
                expected,
            });
        }
        let mut by_class = vec![Vec::new(); n_classes];
        for (i, t) in trees.iter().enumerate() {
            by_class[t.class].push(i);
        }
        if meta.temperature.is_nan() || meta.temperature <= 0.0 {
            return Err(invalid("temperature must be positive"));
        }
        Ok(Self {
            meta,
            fast: Fast::build(&trees),
            trees,
            base_margin,
            n_features,
            by_class,
        })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Raw per-class margins (before softmax), as XGBoost's `output_margin`.
    pub fn margins(&self, x: &[f32]) -> Vec<f32> {
        let mut m = self.base_margin.clone();
        if x.len() < self.n_features || x.iter().any(|v| v.is_nan()) {
            // Missing values follow each split's default direction.
            for t in &self.trees {
                m[t.class] += t.nodes[leaf_of(&t.nodes, x) as usize].value;
            }
            return m;
        }
        const LANES: usize = 8;
        let f = &self.fast;
        let n = f.roots.len();
        let mut start = 0;
        while start < n {
            let lanes = LANES.min(n - start);
            let mut idx = [0u32; LANES];
            idx[..lanes].copy_from_slice(&f.roots[start..start + lanes]);
            let depth = f.depth[start..start + lanes]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            for _ in 0..depth {
                for i in idx.iter_mut().take(lanes) {
                    let node = f.nodes[*i as usize];
                    *i = node.left + u32::from(x[node.feature as usize] >= node.threshold);
                }
            }
            for (k, i) in idx.iter().take(lanes).enumerate() {
                m[usize::from(f.class[start + k])] += f.leaf_value[*i as usize];
            }
            start += lanes;
        }
        m
    }

    /// Calibrated class probabilities.
    pub fn predict(&self, x: &[f32]) -> Prediction {
        let m = self.margins(x);
        let temp = self.meta.temperature;
        let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<f32> = m.iter().map(|v| ((v - max) / temp).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let argmax = |from: usize| {
            (from..probs.len())
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap_or(0)
        };
        Prediction {
            class: argmax(0),
            threat_class: argmax(1),
            p_malicious: 1.0 - probs[0],
            probs,
        }
    }

    /// Exact SHAP values of every feature for `class`'s margin; the last
    /// element is the bias (expected margin). They sum to `margins(x)[class]`.
    pub fn shap(&self, x: &[f32], class: usize) -> Vec<f32> {
        let mut phi = vec![0f64; self.n_features + 1];
        phi[self.n_features] = f64::from(self.base_margin[class]);
        let mut path = Vec::new();
        for &ti in &self.by_class[class] {
            let t = &self.trees[ti];
            phi[self.n_features] += t.expected;
            let need = (t.max_depth + 2) * (t.max_depth + 3) / 2;
            path.clear();
            path.resize(need, PathElem::default());
            tree_shap(&t.nodes, x, &mut phi, 0, 0, &mut path, 0, 1.0, 1.0, -1);
        }
        phi.into_iter().map(|v| v as f32).collect()
    }
}

fn depth(nodes: &[Node], i: usize, d: usize) -> Option<usize> {
    if d > 64 {
        return None;
    }
    let n = nodes[i];
    if n.left == LEAF {
        return Some(d);
    }
    Some(depth(nodes, n.left as usize, d + 1)?.max(depth(nodes, n.right as usize, d + 1)?))
}

#[inline]
fn goes_left(n: &Node, x: &[f32]) -> bool {
    let v = x[n.feature as usize];
    if v.is_nan() {
        n.default_left
    } else {
        v < n.value
    }
}

#[inline]
fn leaf_of(nodes: &[Node], x: &[f32]) -> u32 {
    let mut i = 0u32;
    loop {
        let n = &nodes[i as usize];
        if n.left == LEAF {
            return i;
        }
        i = if goes_left(n, x) { n.left } else { n.right };
    }
}

fn expected_value(nodes: &[Node], i: usize) -> f64 {
    let n = &nodes[i];
    if n.left == LEAF {
        return f64::from(n.value);
    }
    let (l, r) = (&nodes[n.left as usize], &nodes[n.right as usize]);
    let c = f64::from(n.cover);
    if c <= 0.0 {
        return 0.0;
    }
    (f64::from(l.cover) * expected_value(nodes, n.left as usize)
        + f64::from(r.cover) * expected_value(nodes, n.right as usize))
        / c
}

#[derive(Debug, Clone, Copy, Default)]
struct PathElem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut [PathElem], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElem {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / d1;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / d1;
    }
}

fn unwind(path: &mut [PathElem], depth: usize, index: usize) {
    let one = path[index].one;
    let zero = path[index].zero;
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * d1 / ((i + 1) as f64 * one);
            next = tmp - path[i].weight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].weight = path[i].weight * d1 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

fn unwound_sum(path: &[PathElem], depth: usize, index: usize) -> f64 {
    let one = path[index].one;
    let zero = path[index].zero;
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next * d1 / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].weight - tmp * zero * (depth - i) as f64 / d1;
        } else if zero != 0.0 {
            total += path[i].weight * d1 / (zero * (depth - i) as f64);
        }
    }
    total
}

/// One step of Algorithm 2. `path[start..]` is this call's copy of the
/// unique path (the caller's path is `path[parent_start..start]`).
#[allow(clippy::too_many_arguments)]
fn tree_shap(
    nodes: &[Node],
    x: &[f32],
    phi: &mut [f64],
    node: usize,
    depth: usize,
    path: &mut [PathElem],
    parent_start: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    // Copy the parent's path (depth elements) after it, then extend.
    let start = parent_start + depth;
    if depth > 0 {
        path.copy_within(parent_start..parent_start + depth, start);
    }
    let here = &mut path[start..];
    let mut depth = depth;
    extend(here, depth, zero, one, feature);
    let n = nodes[node];
    if n.left == LEAF {
        for i in 1..=depth {
            let w = unwound_sum(here, depth, i);
            let e = here[i];
            phi[e.feature as usize] += w * (e.one - e.zero) * f64::from(n.value);
        }
        return;
    }
    let left = goes_left(&n, x);
    let (hot, cold) = if left {
        (n.left, n.right)
    } else {
        (n.right, n.left)
    };
    let cover = f64::from(n.cover);
    let hot_zero = f64::from(nodes[hot as usize].cover) / cover;
    let cold_zero = f64::from(nodes[cold as usize].cover) / cover;
    let (mut in_zero, mut in_one) = (1.0, 1.0);
    if let Some(k) = (1..=depth).find(|&k| here[k].feature == i64::from(n.feature)) {
        in_zero = here[k].zero;
        in_one = here[k].one;
        unwind(here, depth, k);
        depth -= 1;
    }
    let f = i64::from(n.feature);
    tree_shap(
        nodes,
        x,
        phi,
        hot as usize,
        depth + 1,
        path,
        start,
        hot_zero * in_zero,
        in_one,
        f,
    );
    tree_shap(
        nodes,
        x,
        phi,
        cold as usize,
        depth + 1,
        path,
        start,
        cold_zero * in_zero,
        0.0,
        f,
    );
}
