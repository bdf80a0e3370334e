#!/usr/bin/env bash
# Fashion-MNIST accuracy of every compression hook against the uncompressed
# baseline: 4 ranks, 3 epochs, seed 1, batch 64 per rank, SGD with momentum
# 0.9 at lr 0.05 (the README's table; other flags after the script's name go
# to every run). Prints one JSON line per run and then a Markdown table.
# LOWBIT_ACCURACY_RUNS="name|flags;..." replaces the default list.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
ranks=${LOWBIT_RANKS:-4}
out=${LOWBIT_ACCURACY_OUT:-$LOWBIT_BUILD/accuracy.jsonl}
default_runs="baseline|--hook allreduce;fp16|--hook fp16;bf16|--hook bf16;qsgd 4-bit (EF)|--hook qsgd --bits 4;\
ternary (EF)|--hook ternary;onebit (EF)|--hook onebit;onebit (EF, two-phase)|--hook onebit --exchange twophase;\
topk 1% (EF, DGC warm-up)|--hook topk --density 0.01 --warmup_steps 200 --min_compress_numel 8192;\
randomk 10% (EF)|--hook randomk --density 0.1;powersgd rank 4|--hook powersgd --rank 4"
IFS=';' read -r -a runs <<<"${LOWBIT_ACCURACY_RUNS:-$default_runs}"
: >"$out"
for run in "${runs[@]}"; do
  label=${run%%|*}
  read -r -a flags <<<"${run#*|}"
  line=$("${LOWBIT_MPIRUN[@]}" -np "$ranks" "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 3 \
    --optimizer sgd --lr 0.05 "${flags[@]}" "$@" | tail -n 1)
  echo "{\"label\":\"$label\",${line#\{}" | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = next((r for r in rows if r["label"] == "baseline"), rows[0])
print("| hook | test accuracy | vs baseline | bytes sent/step/rank | compression |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['label']} | {r['test_accuracy']:.4f} | {100 * (r['test_accuracy'] - base['test_accuracy']):+.2f} pt "
          f"| {r['bytes_sent_per_step']:,} | {r['compression_ratio']:.1f}x |")
PY
