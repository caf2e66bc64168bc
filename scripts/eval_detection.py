"""Rates of the verdicts read back from ClickHouse (scripts/eval-detection).

Reads DIR/validation.jsonl (events with their truth), DIR/tests.json and
DIR/verdicts.tsv (event_id, verdict, anomaly score, tactic) and prints the
same table `loadtest eval` prints for the in-process run.
"""
import json
import sys

d = sys.argv[1]
meta = json.load(open(f"{d}/tests.json"))
hours = sum(meta["host_hours"].values())
verdicts = {}
for line in open(f"{d}/verdicts.tsv"):
    eid, verdict, anomaly, tactic = line.rstrip("\n").split("\t")
    verdicts[eid] = ({"ok": 0, "warn": 1, "alert": 2}.get(verdict, 0), float(anomaly), tactic)
rows = []
missing = 0
for line in open(f"{d}/validation.jsonl"):
    e = json.loads(line)
    v = verdicts.get(e["event_id"])
    if v is None:
        missing += 1
        continue
    rows.append((e["truth"], v))


def rates(name, flagged):
    tests, benign, fp = {}, 0, 0
    for truth, v in rows:
        f = flagged(v)
        if truth.get("test") is not None:
            tests[truth["test"]] = tests.get(truth["test"], False) or f
        else:
            benign += 1
            fp += f
    caught = sum(tests.values())
    print(f"| {name} | {100 * caught / max(1, len(tests)):.1f}% | {100 * fp / max(1, benign):.3f}% | {fp / max(hours, 1e-9):.2f} |")


print(f"{len(rows)} validation events scored in ClickHouse ({missing} missing), {hours:.2f} host-hours")
print("| decision (through Kafka, scorer, ClickHouse) | attack tests flagged | benign events flagged | benign flags per host-hour |")
print("|---|---|---|---|")
rates("verdict warn or alert", lambda v: v[0] >= 1)
rates("verdict alert", lambda v: v[0] >= 2)
rates("anomaly score ≥ 0.5 alone", lambda v: v[1] >= 0.5)
if missing:
    sys.exit(f"{missing} validation events were not found in ClickHouse")
