#!/usr/bin/env bash
# Fashion-MNIST accuracy of each 8-bit optimizer against its fp32 counterpart
# (the README's table): 4 ranks, 3 epochs, batch 64 per rank, the same seed
# for both of a pair, seeds from LOWBIT_ACCURACY_SEEDS (default "1 2 3").
# Prints one JSON line per run and then a Markdown table of the mean accuracy
# per optimizer and the 8-bit minus fp32 difference per seed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
out=${LOWBIT_ACCURACY_OUT:-$LOWBIT_BUILD/accuracy_8bit.jsonl}
seeds=${LOWBIT_ACCURACY_SEEDS:-1 2 3}
# name|learning rate: each runs as NAME and NAME8bit (lion: fp32 state vs 8-bit).
pairs=("adam|1e-3" "adamw|1e-3" "sgd|0.05" "lion|2e-4" "rmsprop|1e-3" "adagrad|1e-2")
: >"$out"
for seed in $seeds; do
  for pair in "${pairs[@]}"; do
    name=${pair%%|*}
    lr=${pair#*|}
    for opt in "$name" "${name}8bit"; do
      line=$("${LOWBIT_MPIRUN[@]}" -np 4 "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 3 \
        --optimizer "$opt" --lr "$lr" --seed "$seed" "$@" | tail -n 1)
      echo "{\"label\":\"$opt\",\"seed\":$seed,${line#\{}" | tee -a "$out"
    done
  done
done
/usr/bin/python3 - "$out" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = collections.defaultdict(dict)
for r in rows:
    acc[r["label"]][r["seed"]] = r["test_accuracy"]
state = {r["label"]: r.get("optimizer_state_bytes_per_param", 0) for r in rows}
seeds = sorted({r["seed"] for r in rows})
print("| optimizer | fp32 acc (mean) | 8-bit acc (mean) | 8-bit - fp32 per seed | mean diff | 8-bit state B/param |")
print("|---|---|---|---|---|---|")
for name in dict.fromkeys(r["label"] for r in rows if not r["label"].endswith("8bit")):
    eight = name + "8bit"
    common = [s for s in seeds if s in acc[name] and s in acc.get(eight, {})]
    if not common:
        continue
    diffs = [100 * (acc[eight][s] - acc[name][s]) for s in common]
    print(f"| {name} | {statistics.mean(acc[name][s] for s in common):.4f} "
          f"| {statistics.mean(acc[eight][s] for s in common):.4f} "
          f"| {' / '.join(f'{d:+.2f}' for d in diffs)} pt | {statistics.mean(diffs):+.2f} pt | {state[eight]:.2f} |")
PY
