"""Fits the calibrated decision's thresholds (docs/detection.md).

Reads the outcomes `loadtest eval --until 0.7 --split 0.7 --outcomes FIT.tsv`
writes for the *fit window* of the real captures (49%..70% of each capture
by time: after the part the classifier trains on, before the part that
validates) and prints the `[scoring.decision]` values: the evidence weights
(relative, fixed in the design), and the bias and scale that put the warn
point (P = 0.5) at the score flagging at most WARN_BUDGET of the window's
benign events of every recording of every host, and the alert point
(P = 0.9) at ALERT_BUDGET.

    python3 scripts/fit_decision.py FIT.tsv [WARN_BUDGET ALERT_BUDGET]
"""
import csv
import math
import sys

# Relative weights of the evidence: anomaly score, classifier log-odds (less
# the workload's offset; not counted for repeated behaviour without a
# high-precision indicator), high-precision indicator, new lineage.
W = {"anomaly": 2.0, "classifier": 0.5, "high_precision": 6.0, "new_lineage": 2.0}
REPEATED = 2

path = sys.argv[1]
warn_budget = float(sys.argv[2]) if len(sys.argv) > 2 else 0.001
alert_budget = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0001


def score(r):
    p = min(max(float(r["p_malicious"]), 6e-6), 1 - 6e-6)
    hp = 1.0 if r["high_precision"] else 0.0
    repeated = float(r["distance"]) < 1e-4 and int(r["count"]) >= REPEATED
    c = 0.0 if (repeated and not hp) else max(math.log(p / (1 - p)) - float(r["offset"]), -12.0)
    return (W["anomaly"] * float(r["anomaly"]) + W["classifier"] * c
            + W["high_precision"] * hp + W["new_lineage"] * float(r["new_lineage"]))


rows = list(csv.DictReader(open(path), delimiter="\t", quoting=csv.QUOTE_NONE))
# The budget holds on every recording of every host, not only on the fleet's
# total: a busy host (a build box's compiler and database writes) would
# otherwise buy the others a looser threshold, and a busy recording of a host
# its quiet ones (the build box's first recording has 150 times the events
# of its second, most of them a database's file opens).
by_part = {}
for r in rows:
    if r["test"] == "":
        by_part.setdefault((r["host"], r.get("recording", "0")), []).append(score(r))
benign = [s for v in by_part.values() for s in v]


def at(budget):
    worst = float("-inf")
    for scores in by_part.values():
        scores.sort(reverse=True)
        k = min(int(budget * len(scores)), len(scores) - 1)
        worst = max(worst, scores[k] + 1e-3)
    return worst


s_warn, s_alert = at(warn_budget), at(alert_budget)
# The alert point stays at least 0.5 above the warn point (a steeper P says
# nothing the data can support).
s_alert = max(s_alert, s_warn + 0.5)
k = math.log(9.0) / (s_alert - s_warn)
parts = ", ".join(f"{h}#{n} {len(v)}" for (h, n), v in sorted(by_part.items()))
print(f"# fitted on {len(benign)} benign events of the fit window ({parts}): "
      f"warn at {warn_budget:.3%}, alert at {alert_budget:.3%} of each recording of each host "
      f"(score {s_warn:.3f} / {s_alert:.3f})")
print("[scoring.decision]")
print(f"bias = {-k * s_warn:.4f}")
for name, w in W.items():
    print(f"{name} = {k * w:.4f}")
print(f"repeated = {REPEATED}")
