#!/usr/bin/env python3
"""PNG of validation loss against steps and against bytes sent, one curve per
method, from the examples' metrics CSVs (--metrics_csv).

plot_metrics.py --out PLOT.png --runs RUNS.jsonl --csv_dir DIR [--seed 1]
plot_metrics.py --out PLOT.png LABEL=FILE.csv ...

RUNS.jsonl is what scripts/gpt_quality.sh writes (each line names its label,
seed and metrics CSV). Each CSV has a header with at least step, val_loss and
bytes_sent (cumulative bytes this rank sent). Uses Debian's python3-matplotlib.
"""
import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(path):
    steps, losses, sent = [], [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            losses.append(float(row["val_loss"]))
            sent.append(float(row["bytes_sent"]) / 1e9)
    return steps, losses, sent


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs")
    p.add_argument("--csv_dir", default=".")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--title", default="GPT tiny on the King James Bible, 4 ranks")
    p.add_argument("curves", nargs="*", help="LABEL=FILE.csv")
    args = p.parse_args()
    curves = []
    if args.runs:
        for line in open(args.runs):
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("seed") == args.seed and r.get("metrics_csv"):
                curves.append((r["label"], os.path.join(args.csv_dir, r["metrics_csv"])))
    for c in args.curves:
        label, _, path = c.partition("=")
        curves.append((label, path))
    curves = [(label, path) for label, path in curves if os.path.exists(path)]
    if not curves:
        sys.exit("plot_metrics.py: no metrics CSV to plot")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6.5))
    cmap = plt.get_cmap("tab20")
    for i, (label, path) in enumerate(curves):
        steps, losses, sent = read_curve(path)
        style = dict(color=cmap(i % 20), linestyle="-" if i < 20 else "--", linewidth=1.4, label=label)
        a1.plot(steps, losses, **style)
        a2.plot(sent, losses, **style)
    a1.set_xlabel("optimizer step")
    a2.set_xlabel("GB sent per rank (cumulative)")
    a2.set_xscale("log")
    for a in (a1, a2):
        a.set_ylabel("validation loss (nats/char)")
        a.grid(True, alpha=0.3)
    lo = min(min(read_curve(p)[1]) for _, p in curves)
    a1.set_ylim(lo - 0.05, lo + 1.0)
    a2.set_ylim(lo - 0.05, lo + 1.0)
    a2.legend(fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot_metrics.py: wrote {args.out} ({len(curves)} curves)")


if __name__ == "__main__":
    main()
