#!/usr/bin/env python3
"""How well a flagged attack's tactic is named, on techniques never seen.

Cross-validation grouped by ATT&CK technique with the folds
scripts/train_classifier.py makes (run scripts/train first: it writes the
feature rows). For each attack, its most malicious-looking event is named
two ways and compared with the attack's tactic:

- class: the classifier's most likely malicious class;
- evidence: the tactic of the present technique-bearing feature ranked as
  `Classifier::explain` ranks it (high-precision indicators, then specific,
  then generic evidence, then a service's shell as the place a program other
  than a shell runs, then what the process looks like (a hidden name, an
  executable in /tmp); within a tier the largest TreeSHAP contribution to
  the threat class), the class when no feature points at a technique.
  A payload written into a start-up location names the start-up
  location first (`explain::leading_technique`); a shell started through
  the command's arguments (`find . -exec /bin/sh`) names execution after
  the high-precision evidence (and the technique the arguments name, not
  modelled) and before the rest, unless a command channel
  or a start-up location is present (`explain::shell_through_arguments`;
  modelled with the whole line's indicators: the rows do not say whether
  the program's own name matched). Not modelled: the started
  or fetched program's own technique (`lexicon::program_technique`), the
  technique the arguments name (`lexicon::command_technique`, with the
  direction a transfer moves data, `lexicon::transfer_technique`) and the
  login shells and file operands `shell_in_arguments` leaves out, which
  need the program's name and command line, not in the feature rows.

    .outlier/venv-train/bin/python scripts/naming_cv.py [--data DIR]

Figures: docs/detection.md ("Naming"), docs/benchmarks.md.
"""

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).parent))
from train_classifier import FOLDS, folds_by_group, load, softmax  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The table of classifier/src/explain.rs (technique → tactic) and its
# evidence tiers, read from the Rust sources so the two cannot drift.
EXPLAIN = (REPO / "classifier/src/explain.rs").read_text()
LEXICON = (REPO / "classifier/src/lexicon.rs").read_text()
LIB = (REPO / "classifier/src/lib.rs").read_text()


def tactic_table():
    body = EXPLAIN[EXPLAIN.index("pub fn tactic_of_technique"):EXPLAIN.index("pub fn generic_evidence")]
    table = {}
    for techs, tactic in re.findall(r'((?:"T\d+"\s*\|?\s*)+)=>\s*\{?\s*"([a-z-]+)"', body):
        for t in re.findall(r'"(T\d+)"', techs):
            table[t] = tactic
    return table


FEATURES = (REPO / "classifier/src/features.rs").read_text()


def variant_names():
    """`Family::Variant` → feature name, from the `family!` declarations."""
    out = {}
    for fam, body in re.findall(r"family! \{.*?(\w+) at at::\w+; \{(.*?)\}", FEATURES, re.S):
        for var, name in re.findall(r'(\w+) = "([a-z_0-9]+)"', body):
            out[f"{fam}::{var}"] = name
    return out


def features_named(text):
    """The feature names a piece of Rust source refers to."""
    names = variant_names()
    found = set(re.findall(r'indicator\("([a-z_0-9]+)"\)', text))
    found |= {names[v] for v in re.findall(r"\b(\w+::\w+)\b", text) if v in names}
    return found


def feature_techniques(names):
    ind = dict(re.findall(r'^\s*"(cmd_[a-z_0-9]+)" => \[.*?\], ".*?", "(T?[0-9.]*)";', LEXICON, re.M))
    body = EXPLAIN[EXPLAIN.index("pub fn technique("):EXPLAIN.index("/// A short sentence")]
    other = {}
    prev = 0
    for m in re.finditer(r'=>\s*\{?\s*"(T[\d.]+)"', body):
        # The arm's patterns: after the previous arm's end.
        seg = body[prev:m.start()]
        seg = seg[max(seg.rfind(","), seg.rfind("{"), seg.rfind("}")) + 1:]
        for f in features_named(seg):
            other.setdefault(f, m.group(1))
        prev = m.end()
    other["shell_under_service"] = "T1059.004"
    return {i: ind.get(n) or other.get(n) for i, n in enumerate(names) if ind.get(n) or other.get(n)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO / "target/train-data")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    meta, x, y, technique, attack, context, workload = load(args.data)
    names, classes = meta["feature_names"], meta["classes"]
    fold = folds_by_group(y, technique, workload, FOLDS, np.random.default_rng(args.seed))
    counts = np.bincount(y, minlength=len(classes)).astype(float)
    w = np.sqrt(counts.sum() / (len(classes) * np.maximum(counts, 1)))
    w = w / w[0]
    params = {"objective": "multi:softprob", "num_class": len(classes), "tree_method": "hist", "max_depth": 5,
              "eta": 0.2, "subsample": 0.8, "colsample_bytree": 0.8, "min_child_weight": 2.0, "max_bin": 128,
              "base_score": 0.5, "seed": args.seed, "nthread": 2}
    mal = np.where(y > 0)[0]
    oof = np.zeros((len(mal), len(classes)), np.float32)
    phi = np.zeros((len(mal), len(classes), len(names) + 1), np.float32)
    for f in range(FOLDS):
        held = fold == f
        b = xgb.train(params, xgb.DMatrix(x[~held], label=y[~held], weight=w[y[~held]]), 50)
        rows = np.where(held[mal])[0]
        d = xgb.DMatrix(x[mal[rows]])
        oof[rows] = b.predict(d, output_margin=True)
        phi[rows] = b.predict(d, pred_contribs=True)
        print(f"fold {f + 1}/{FOLDS}", file=sys.stderr)

    table = tactic_table()
    ftech = feature_techniques(names)
    ftactic = {i: classes.index(table[t.split(".")[0]]) for i, t in ftech.items()
               if table.get(t.split(".")[0]) in classes}
    hp = features_named(LIB[LIB.index("pub const HIGH_PRECISION"):].split("\n];")[0])
    generic = features_named(EXPLAIN[EXPLAIN.index("pub fn generic_evidence"):].split("\n}\n")[0])
    assert "cmd_dev_tcp" in hp and "file_shadow" in hp and "shell_under_service" in generic, (hp, generic)
    shipped = json.loads((REPO / "models/classifier.json").read_text())["meta"]
    probs = softmax(oof, shipped["temperature"])
    cls = 1 + probs[:, 1:].argmax(1)
    xm, ym = x[mal], y[mal]
    evid = cls.copy()
    nettool = names.index("proc_nettool")
    shellish = [names.index("proc_shell"), names.index("proc_interpreter")]
    appearance = features_named(EXPLAIN[EXPLAIN.index("const APPEARANCE:"):].split("\n];")[0])
    assert appearance == {"cmd_hidden_file", "exe_in_tmp", "exe_hidden"}, appearance
    nc_exec = names.index("cmd_nc_exec")
    execution = classes.index("execution")

    def ranked_evidence(r, i, c):
        # As Classifier::explain: `-e sh` run by no network tool is a shell
        # starting a shell (generic, execution); streams wired to a
        # descriptor rank after the other high-precision evidence.
        if i == nc_exec and xm[r, nettool] == 0:
            return (2, -phi[r, cls[r], i], execution)
        n = names[i]
        # A program a service's shell ran: where it runs, ranked after
        # what it does; what a process looks like after both
        # (explain::naming_tier).
        if n == "shell_under_service" and not any(xm[r, j] != 0 for j in shellish):
            return (3, -phi[r, cls[r], i], c)
        if n in appearance:
            return (4, -phi[r, cls[r], i], c)
        tier = 0 if n in hp and n != "cmd_fd_redirect" else 2 if n in generic else 1
        return (tier, -phi[r, cls[r], i], c)

    # As explain::leading_technique: a payload written into a start-up
    # location names the start-up location's tactic before anything else.
    def const_features(name):
        return [names.index(n) for n in sorted(features_named(EXPLAIN[EXPLAIN.index(f"const {name}:"):].split("\n];")[0]))]

    startup, payload = const_features("STARTUP"), const_features("PAYLOAD")
    assert len(startup) == 3 and len(payload) == 6, (startup, payload)
    spawn = [names.index("cmd_spawn_shell"), names.index("cmd_shell_escape")]
    channel = [i for i, t in ftech.items() if t.split(".")[0] in ("T1095", "T1571")]

    def shell_through_arguments(r):
        return (any(xm[r, i] != 0 for i in spawn)
                and not any(xm[r, i] != 0 for i in startup)
                and not any(xm[r, i] != 0 and not (i == nc_exec and xm[r, nettool] == 0) for i in channel))

    for r in range(len(mal)):
        installed = [i for i in startup if xm[r, i] != 0 and i in ftactic]
        if installed and any(xm[r, i] != 0 for i in payload):
            evid[r] = ftactic[installed[0]]
            continue
        ranked = [ranked_evidence(r, i, c) for i, c in ftactic.items() if xm[r, i] != 0]
        if shell_through_arguments(r):
            ranked.append((0.5, 0.0, execution))
        if ranked:
            evid[r] = min(ranked)[2]
    # Each attack's most malicious-looking event.
    top = {}
    for r, a in enumerate(attack[mal]):
        p = 1 - probs[r, 0]
        if a not in top or p > top[a][0]:
            top[a] = (p, r)
    source = {}
    for line in (REPO / "data/attacks_train.jsonl").read_text().splitlines():
        row = json.loads(line)
        source[row["id"]] = row["source"]
    for label, pred in (("class", cls), ("evidence", evid)):
        by = defaultdict(list)
        for a, (_, r) in top.items():
            ok = pred[r] == ym[r]
            by["all"].append(ok)
            by[source.get(a, "?")].append(ok)
        print(label + ": " + ", ".join(f"{k} {100 * np.mean(v):.1f}% of {len(v)}" for k, v in sorted(by.items())))


if __name__ == "__main__":
    main()
