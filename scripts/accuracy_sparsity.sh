#!/usr/bin/env bash
# Fashion-MNIST accuracy of each sparse-training mode against the dense
# baseline (the README's table): 4 ranks, 3 epochs, batch 64 per rank, Adam
# lr 1e-3, the same seed for every mode, seeds from LOWBIT_ACCURACY_SEEDS
# (default "1 2 3"). Modes: LOWBIT_SPARSITY_MODES, each "sparsity[+qat]".
# Prints one JSON line per run, then a Markdown table.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
bin=${LOWBIT_SPARSITY_BIN:-$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist}
out=${LOWBIT_ACCURACY_OUT:-$LOWBIT_BUILD/accuracy_sparsity.jsonl}
seeds=${LOWBIT_ACCURACY_SEEDS:-1 2 3}
modes=${LOWBIT_SPARSITY_MODES:-dense 2:4_srste 4:8_srste 2:4_pgf gmp90 +w4a8 2:4_srste+w4a8}
: >"$out"
for seed in $seeds; do
  for mode in $modes; do
    sparsity=${mode%%+*}
    qat=""
    [[ $mode == *+* ]] && qat=${mode#*+}
    [[ $sparsity == dense ]] && sparsity=""
    line=$("${LOWBIT_MPIRUN[@]}" -np 4 "$bin" --epochs 3 --seed "$seed" --sparsity "$sparsity" --qat "$qat" "$@" |
      tail -n 1)
    echo "{\"label\":\"$mode\",\"seed\":$seed,${line#\{}" | tee -a "$out"
  done
done
/usr/bin/python3 "$(dirname "$0")/paired_table.py" "$out" dense weight_sparsity "zero weights"
