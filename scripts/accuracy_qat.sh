#!/usr/bin/env bash
# Fashion-MNIST accuracy of each QAT / low-bit training mode against the fp32
# baseline (the README's table): 4 ranks, 3 epochs, batch 64 per rank, Adam
# lr 1e-3, the same seed for every mode, seeds from LOWBIT_ACCURACY_SEEDS
# (default "1 2 3"). Prints one JSON line per run, then a Markdown table.
# LOWBIT_QAT_BIN runs another build of the example (e.g. a copy).
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
bin=${LOWBIT_QAT_BIN:-$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist}
out=${LOWBIT_ACCURACY_OUT:-$LOWBIT_BUILD/accuracy_qat.jsonl}
seeds=${LOWBIT_ACCURACY_SEEDS:-1 2 3}
modes=${LOWBIT_QAT_MODES:-fp32 w8a8 w4a8 w4a4_lsq w4a4_quest w2a2_quest w1a1_quest int8_train fp8_train}
: >"$out"
for seed in $seeds; do
  for mode in $modes; do
    qat=$mode
    [[ $mode == fp32 ]] && qat=""
    line=$("${LOWBIT_MPIRUN[@]}" -np 4 "$bin" --epochs 3 --seed "$seed" --qat "$qat" "$@" | tail -n 1)
    echo "{\"label\":\"$mode\",\"seed\":$seed,${line#\{}" | tee -a "$out"
  done
done
/usr/bin/python3 "$(dirname "$0")/paired_table.py" "$out" fp32 weight_flip_fraction "weight flips/step (last epoch)"
