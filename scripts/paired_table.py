#!/usr/bin/env python3
"""Markdown table of paired accuracy runs (the accuracy_*.sh scripts).

paired_table.py RUNS.jsonl BASELINE EXTRA_KEY EXTRA_TITLE

Each line of RUNS.jsonl is the example's JSON line plus "label" and "seed".
Every label is compared with BASELINE on the seeds both ran; EXTRA_KEY is
one more per-run field, shown as a mean percentage (negative values: not
measured, left out; none measured: n/a).
"""
import collections
import json
import statistics
import sys

path, baseline, extra_key, extra_title = sys.argv[1:5]
rows = [json.loads(line) for line in open(path)]
acc = collections.defaultdict(dict)
extra = collections.defaultdict(list)
secs = collections.defaultdict(list)
for r in rows:
    acc[r["label"]][r["seed"]] = r["test_accuracy"]
    if r.get(extra_key, -1) >= 0:
        extra[r["label"]].append(r[extra_key])
    secs[r["label"]].append(r["seconds"])
seeds = sorted({r["seed"] for r in rows})
print(f"| mode | test acc (mean) | - {baseline} per seed | mean diff | {extra_title} | seconds |")
print("|---|---|---|---|---|---|")
for mode in dict.fromkeys(r["label"] for r in rows):
    common = [s for s in seeds if s in acc[mode] and s in acc.get(baseline, {})]
    if not common:
        continue
    diffs = [100 * (acc[mode][s] - acc[baseline][s]) for s in common]
    e = f"{100 * statistics.mean(extra[mode]):.3f}%" if extra[mode] else "n/a"
    print(f"| {mode} | {statistics.mean(acc[mode][s] for s in common):.4f} "
          f"| {' / '.join(f'{d:+.2f}' for d in diffs)} pt | {statistics.mean(diffs):+.2f} pt | {e} "
          f"| {statistics.mean(secs[mode]):.0f} |")
