#!/usr/bin/env python3
"""Train Outlier's threat classifier from the simulator's feature vectors.

Run through `scripts/train` (which makes the data with `loadtest features`).
Everything here is deterministic given --seed: the split, the trees (XGBoost
`hist` on one thread), the calibration and the thresholds, so the shipped
model is reproduced byte for byte.

Validation is cross-validation grouped by ATT&CK technique (an attack
technique is never in the training folds of the model that scores it) and,
for benign events, by workload: the figures measure how the model does on
techniques and workloads it never saw. Calibration (softmax temperature)
and the decision thresholds are fitted on those out-of-fold scores.
"""

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb

FPR_WARN = 1e-3  # at most 1 benign event in 1,000 warned by the classifier
FPR_ALERT = 1e-4  # at most 1 in 10,000 raised to alert by the classifier
FOLDS = 5


def load(data: Path):
    meta = json.loads((data / "dataset.json").read_text())
    rows, nf = meta["rows"], meta["n_features"]
    x = np.fromfile(data / "features.f32", dtype="<f4").reshape(rows, nf)
    lines = (data / "labels.tsv").read_text().splitlines()[1:]
    cols = [l.split("\t") for l in lines]
    y = np.array([int(c[0]) for c in cols], dtype=np.int32)
    technique = np.array([c[2] for c in cols])
    attack = np.array([c[3] for c in cols])
    context = np.array([c[4] for c in cols])
    workload = np.array([c[5] for c in cols])
    assert len(y) == rows
    return meta, x, y, technique, attack, context, workload


def folds_by_group(y, technique, workload, k, rng):
    """Fold of every row: attack rows by ATT&CK technique, benign rows by
    workload. Groups go, largest first, to the fold with the fewest rows so
    far (ties broken by a seeded shuffle), so each technique and each benign
    workload is held out exactly once."""
    fold = np.full(len(y), -1, dtype=np.int32)
    for rows_of in (y > 0, y == 0):
        key = np.where(rows_of, np.where(y > 0, technique, workload), "")
        groups = sorted(set(key[rows_of]))
        sizes = {g: int((key == g).sum()) for g in groups}
        order = [groups[i] for i in rng.permutation(len(groups))]
        order.sort(key=lambda g: -sizes[g])
        load = [0] * k
        for g in order:
            f = min(range(k), key=lambda i: (load[i], i))
            load[f] += sizes[g]
            fold[rows_of & (key == g)] = f
    assert (fold >= 0).all()
    return fold


def softmax(m, t=1.0):
    z = m / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(margins, y):
    def nll(t):
        p = softmax(margins, t)
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)))

    grid = np.round(np.arange(0.25, 8.0001, 0.05), 4)
    losses = [nll(t) for t in grid]
    return float(grid[int(np.argmin(losses))])


def threshold_at(p_mal_benign, fpr):
    """Lowest threshold whose benign false-positive rate is at most `fpr`."""
    s = np.sort(p_mal_benign)[::-1]
    allowed = int(math.floor(fpr * len(s)))
    # Flag p >= t; with t just above the (allowed+1)-th highest benign score.
    if allowed >= len(s):
        return 0.0
    t = float(np.nextafter(np.float32(s[allowed]), np.float32(2.0)))
    return min(max(t, 0.05), 0.999)


def metrics(probs, y, classes, t_warn, attack, context):
    p_mal = 1.0 - probs[:, 0]
    flagged = p_mal >= t_warn
    threat = 1 + np.argmax(probs[:, 1:], axis=1)
    out = {"per_tactic": {}}
    mal = y > 0
    out["events"] = int(len(y))
    out["benign_events"] = int((~mal).sum())
    out["attack_events"] = int(mal.sum())
    out["event_recall"] = float(flagged[mal].mean()) if mal.any() else 0.0
    out["false_positive_rate"] = float(flagged[~mal].mean()) if (~mal).any() else 0.0
    out["precision"] = float(mal[flagged].mean()) if flagged.any() else 0.0
    ids = sorted(set(attack[mal]))
    hit = {a: False for a in ids}
    for a, f in zip(attack[mal], flagged[mal]):
        hit[a] |= bool(f)
    out["attacks"] = len(ids)
    out["attack_recall"] = float(np.mean(list(hit.values()))) if ids else 0.0
    for c in range(1, len(classes)):
        is_c = y == c
        pred_c = flagged & (threat == c)
        tp = int((pred_c & is_c).sum())
        out["per_tactic"][classes[c]] = {
            "events": int(is_c.sum()),
            "detected": float(flagged[is_c].mean()) if is_c.any() else None,
            "recall": tp / int(is_c.sum()) if is_c.any() else None,
            "precision": tp / int(pred_c.sum()) if pred_c.any() else None,
        }
    ctxs = sorted(set(context[mal]))
    out["per_context"] = {c: float(flagged[mal & (context == c)].mean()) for c in ctxs}
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TREE_FIELDS = ["left_children", "right_children", "split_indices", "split_conditions", "default_left", "sum_hessian"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--golden", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--exclude-fold", type=int, default=None,
                    help="leave out the attack rows of this technique fold (numbered as the shipped model's "
                         "fold_of_technique) and train on the rest, for scripts/eval-unseen-techniques; the "
                         "model's meta.training.excluded_techniques lists them")
    args = ap.parse_args()

    meta, x, y, technique, attack, context, workload = load(args.data)
    excluded = None
    if args.exclude_fold is not None:
        f0 = folds_by_group(y, technique, workload, FOLDS, np.random.default_rng(args.seed))
        out_rows = (y > 0) & (f0 == args.exclude_fold)
        excluded = sorted(set(technique[out_rows]))
        assert excluded, f"fold {args.exclude_fold} has no attack rows"
        keep = ~out_rows
        x, y, technique, attack, context, workload = (a[keep] for a in (x, y, technique, attack, context, workload))
    classes = meta["classes"]
    rng = np.random.default_rng(args.seed)
    fold = folds_by_group(y, technique, workload, FOLDS, rng)
    names = meta["feature_names"]

    # Class imbalance: weight each class by the square root of its rarity.
    counts = np.bincount(y, minlength=len(classes)).astype(np.float64)
    w_class = np.where(counts > 0, np.sqrt(counts.sum() / (len(classes) * np.maximum(counts, 1))), 0.0)
    w_class = w_class / w_class[0]
    params = {
        "objective": "multi:softprob",
        "num_class": len(classes),
        "tree_method": "hist",
        "max_depth": args.depth,
        "eta": 0.2,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 2.0,
        "lambda": 1.0,
        "max_bin": 128,
        "base_score": 0.5,
        "seed": args.seed,
        "nthread": 1,
    }

    def fit(rows):
        d = xgb.DMatrix(x[rows], label=y[rows], weight=w_class[y[rows]], feature_names=names)
        return xgb.train(params, d, args.rounds)

    # Out-of-fold margins: every row scored by a model that never saw its
    # technique (attacks) or its workload (benign).
    oof = np.zeros((len(y), len(classes)), dtype=np.float32)
    for f in range(FOLDS):
        held = fold == f
        print(f"fold {f + 1}/{FOLDS}: {held.sum()} rows held out", file=sys.stderr)
        oof[held] = fit(~held).predict(xgb.DMatrix(x[held], feature_names=names), output_margin=True)
    booster = fit(np.ones(len(y), dtype=bool))

    temperature = fit_temperature(oof, y)
    probs = softmax(oof, temperature)
    p_mal = 1.0 - probs[:, 0]
    t_warn = threshold_at(p_mal[y == 0], FPR_WARN)
    t_alert = max(threshold_at(p_mal[y == 0], FPR_ALERT), t_warn)
    m = metrics(probs, y, classes, t_warn, attack, context)
    m_alert = metrics(probs, y, classes, t_alert, attack, context)
    techniques = sorted(set(technique[y > 0]))
    workloads = sorted(set(workload[y == 0]))

    raw = json.loads(booster.save_raw("json").decode())
    learner = raw["learner"]
    model = learner["gradient_booster"]["model"]
    trimmed = {
        "version": raw.get("version"),
        "learner": {
            "learner_model_param": learner["learner_model_param"],
            "objective": learner["objective"],
            "gradient_booster": {
                "name": learner["gradient_booster"]["name"],
                "model": {
                    "tree_info": model["tree_info"],
                    "trees": [{k: t[k] for k in TREE_FIELDS} for t in model["trees"]],
                },
            },
        },
    }
    # What the training data came from: the corpora and the real captures
    # (not data/attack_tests.jsonl: those tests are kept for `loadtest eval`).
    used = [p for p in sorted(args.corpus.glob("*.jsonl")) if p.name != "attack_tests.jsonl"]
    used += sorted(args.corpus.glob("real/*.jsonl.gz"))
    corpus = {str(p.relative_to(args.corpus)): sha256(p) for p in used}
    training = {
        "seed": args.seed,
        "rounds": args.rounds,
        "params": params,
        "xgboost": xgb.__version__,
        "numpy": np.__version__,
        "corpus_sha256": corpus,
        "rows": int(len(y)),
        "folds": FOLDS,
        "fold_of_technique": {t: int(fold[technique == t][0]) for t in techniques},
        "class_weights": [round(float(w), 6) for w in w_class],
        "fpr_bounds": {"warn": FPR_WARN, "alert": FPR_ALERT},
        "validation_at_warn": m,
        "validation_at_alert": m_alert,
    }
    if excluded is not None:
        training["excluded_techniques"] = excluded
    out = {
        "meta": {
            "feature_names": meta["feature_names"],
            "classes": classes,
            "temperature": temperature,
            "warn_threshold": t_warn,
            "alert_threshold": t_alert,
            "training": training,
        },
        "xgboost": trimmed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")

    # Golden vectors: XGBoost's own margins and exact TreeSHAP values
    # (pred_contribs) for validation rows of every class, so the Rust
    # evaluation and explanations are checked against XGBoost.
    pick = []
    vy = np.arange(len(y))
    for c in range(len(classes)):
        rows = vy[y[vy] == c]
        pick.extend(rows[rng.permutation(len(rows))[:4]].tolist())
    pick = sorted(pick)
    dg = xgb.DMatrix(x[pick], feature_names=meta["feature_names"])
    gm = booster.predict(dg, output_margin=True)
    gc = booster.predict(dg, pred_contribs=True)  # rows × classes × (features + 1)
    golden = {
        "rows": [[float(v) for v in x[i]] for i in pick],
        "margins": [[float(v) for v in r] for r in gm],
        "contribs": [[[float(v) for v in cl] for cl in r] for r in gc],
    }
    args.golden.write_text(json.dumps(golden, separators=(",", ":")) + "\n")

    # The validation report, for docs/classifier.md.
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}%"

    lines = [
        "<!-- written by scripts/train; do not edit -->",
        f"{FOLDS}-fold cross-validation grouped by ATT&CK technique: every one of the {m['attack_events']} attack "
        f"events ({len(techniques)} techniques) and {m['benign_events']} benign events ({len(workloads)} workloads, "
        f"grouped by workload) is scored by a model that never saw its technique or its workload "
        f"(seed {args.seed}, {args.rounds} rounds × {len(classes)} classes, depth {args.depth}, "
        f"temperature {temperature:.2f}). The shipped model is then trained on all rows.",
        "",
        f"| threshold | P(malicious) ≥ | event recall | attacks with ≥1 event flagged | precision | benign false-positive rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, t, mm in (("warn", t_warn, m), ("alert", t_alert, m_alert)):
        lines.append(
            f"| {name} | {t:.3f} | {pct(mm['event_recall'])} | {pct(mm['attack_recall'])} of {mm['attacks']} "
            f"| {pct(mm['precision'])} | {100 * mm['false_positive_rate']:.3f}% |"
        )
    lines += [
        "",
        "Per tactic at the warn threshold (recall: flagged *and* given the right tactic; "
        "detected: flagged at all; precision: of the events given this tactic, how many were this tactic):",
        "",
        "| tactic | events | detected | recall | precision |",
        "|---|---|---|---|---|",
    ]
    for tac, v in m["per_tactic"].items():
        lines.append(f"| {tac} | {v['events']} | {pct(v['detected'])} | {pct(v['recall'])} | {pct(v['precision'])} |")
    lines += ["", "Detection by injection context (warn threshold):", "", "| context | detected |", "|---|---|"]
    for c, v in m["per_context"].items():
        lines.append(f"| {c} | {pct(v)} |")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
