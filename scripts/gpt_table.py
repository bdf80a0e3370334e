#!/usr/bin/env python3
"""Markdown table of the GPT quality runs (scripts/gpt_quality.sh).

gpt_table.py RUNS.jsonl [BASELINE]

Each line of RUNS.jsonl is the GPT example's JSON line plus "label" and
"seed". Every label's validation loss is compared with BASELINE's (default
"fp32 AdamW") on the seeds both ran, as a relative difference, against the
row's bar (the issue's: within 0.5% for fp16, bf16 and QSGD 4-bit, 2% for the
other exchanges, the 1-bit optimizers and DiLoCo,
1% for adamw8bit and W8A8, 3% W4A8 and 2:4, 5% W4A4; the adaptive hooks are
compared with their uniform row for bytes and loss). A second table gives
the adaptive hooks against their uniform defaults.
"""
import collections
import json
import statistics
import sys

BARS = {"fp16": 0.5, "bf16": 0.5, "powersgd": 2, "ternary": 2, "onebit": 2, "topk 1%": 2, "powersgd rank 4": 2,
        "qsgd 4-bit (EF)": 0.5, "ternary (EF)": 2, "onebit (EF)": 2, "DiLoCo": 2, "Streaming DiLoCo": 2,
        "topk 1% (EF)": 2, "1-bit Adam": 2, "0/1 Adam": 2, "1-bit LAMB": 2, "adamw8bit": 1, "W8A8": 1, "W4A8": 3,
        "W4A4 LSQ": 5, "W4A4 QuEST": 5, "2:4 SR-STE (MLP)": 3}
# adaptive powersgd and adaptive topk carry AdamW's momentum as powersgd and topk do (rank 16, 1% local),
# so those are their uniform rows; adaptive qsgd compresses gradients, as qsgd.
UNIFORM = {"adaptive powersgd": "powersgd", "adaptive topk": "topk 1%", "adaptive qsgd": "qsgd 4-bit (EF)"}

path = sys.argv[1]
baseline = sys.argv[2] if len(sys.argv) > 2 else "fp32 AdamW"
rows = [json.loads(line) for line in open(path) if line.strip()]
by = collections.defaultdict(dict)
for r in rows:
    by[r["label"]][r["seed"]] = r


def mean(label, key, seeds):
    return statistics.mean(by[label][s][key] for s in seeds)


print(f"| method | val loss (nats/char) | bits/char | vs {baseline} per seed | mean | bar | "
      "bytes sent/step/rank | compression | tokens/s | seconds |")
print("|---|---|---|---|---|---|---|---|---|---|")
for label in dict.fromkeys(r["label"] for r in rows):
    seeds = sorted(s for s in by[label] if s in by.get(baseline, {}))
    if not seeds:
        continue
    diffs = [100 * (by[label][s]["val_loss"] / by[baseline][s]["val_loss"] - 1) for s in seeds]
    bar = BARS.get(label)
    if label == baseline:
        verdict = "baseline"
    elif bar is None:
        verdict = "reported"
    else:
        verdict = f"{'within' if statistics.mean(diffs) <= bar else 'MISSES'} {bar}%"
    loss = mean(label, "val_loss", seeds)
    print(f"| {label} | {loss:.4f} | {mean(label, 'val_bpc', seeds):.3f} "
          f"| {' / '.join(f'{d:+.2f}%' for d in diffs)} | {statistics.mean(diffs):+.2f}% | {verdict} "
          f"| {mean(label, 'bytes_sent_per_step', seeds):,.0f} | {mean(label, 'compression_ratio', seeds):.1f}x "
          f"| {mean(label, 'tokens_per_second', seeds):,.0f} | {mean(label, 'seconds', seeds):.0f} |")

adaptive = [a for a in UNIFORM if a in by and UNIFORM[a] in by]
if adaptive:
    print()
    print("| adaptive hook | uniform | bytes: uniform / adaptive | val loss vs uniform | target (>= 1.5x, <= +1%) |")
    print("|---|---|---|---|---|")
    for a in adaptive:
        u = UNIFORM[a]
        seeds = sorted(set(by[a]) & set(by[u]))
        if not seeds:
            continue
        ratio = mean(u, "bytes_sent_per_step", seeds) / mean(a, "bytes_sent_per_step", seeds)
        loss = 100 * (mean(a, "val_loss", seeds) / mean(u, "val_loss", seeds) - 1)
        ok = "met" if ratio >= 1.5 and loss <= 1 else "missed"
        print(f"| {a} | {u} | {ratio:.2f}x | {loss:+.2f}% | {ok} |")
