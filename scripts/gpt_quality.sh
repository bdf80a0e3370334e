#!/usr/bin/env bash
# Validation loss of every lowbit method on the GPT example against fp32
# AdamW: the tiny preset on 4 ranks, 600 steps of 16 windows x 64 characters
# per rank (2.46M tokens), the same seeds and data for every row (other flags
# after the script's name go to every run). Appends one JSON line per run to
# $LOWBIT_GPT_OUT (label and seed added; a label and seed already there is
# not run again, so an interrupted sweep continues), writes each run's
# metrics CSV to $LOWBIT_GPT_CSV_DIR, then prints the table
# (scripts/gpt_table.py) and the plot (scripts/plot_metrics.py).
#
#   LOWBIT_GPT_SEEDS="1 2 3"           seeds (default 1)
#   LOWBIT_GPT_RUNS="label|flags;..."  rows (default: every method)
#   LOWBIT_GPT_BIN=PATH                 a copy of the binary, so a rebuild mid-sweep
#                                       does not change the runs
#
# The longer yardstick and the larger transformer (docs/gpt.md) are the same
# sweep with flags after the script's name, which come last and so win, into a
# file of their own:
#   LOWBIT_GPT_OUT=build/gpt_quality_2000.jsonl scripts/gpt_quality.sh --steps 2000 --eval_interval 100
#   LOWBIT_GPT_OUT=build/gpt_quality_medium.jsonl scripts/gpt_quality.sh --preset medium --eval_interval 100
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
ranks=${LOWBIT_RANKS:-4}
out=${LOWBIT_GPT_OUT:-$LOWBIT_BUILD/gpt_quality.jsonl}
csv_dir=${LOWBIT_GPT_CSV_DIR:-$LOWBIT_BUILD/gpt_metrics}
mkdir -p "$csv_dir"
touch "$out"
default_runs="fp32 AdamW|;fp16|--hook fp16;bf16|--hook bf16;powersgd|--hook powersgd;\
qsgd 4-bit (EF)|--hook qsgd --bits 4;ternary|--hook ternary;onebit|--hook onebit;\
topk 1%|--hook topk;1-bit Adam|--optimizer onebit_adam;0/1 Adam|--optimizer zeroone_adam;\
1-bit LAMB|--optimizer onebit_lamb;adamw8bit|--optimizer adamw8bit;\
W8A8|--qat w8a8;W4A8|--qat w4a8;W4A4 LSQ|--qat w4a4_lsq;W4A4 QuEST|--qat w4a4_quest;W2A2 QuEST|--qat w2a2_quest;\
int8 training|--qat int8_train;fp8 training|--qat fp8_train;2:4 SR-STE (MLP)|--sparsity 2:4_srste;\
adaptive powersgd|--hook adaptive_powersgd;adaptive topk|--hook adaptive_topk;\
adaptive qsgd|--hook adaptive_qsgd --bits 4;\
DiLoCo|--outer diloco;Streaming DiLoCo|--outer streaming_diloco;\
powersgd rank 4 (gradients)|--hook powersgd --rank 4 --compress_gradients;onebit (gradients)|--hook onebit --compress_gradients;\
topk 1% (gradients)|--hook topk --compress_gradients;ternary (gradients)|--hook ternary --compress_gradients"
IFS=';' read -r -a runs <<<"${LOWBIT_GPT_RUNS:-$default_runs}"
for seed in ${LOWBIT_GPT_SEEDS:-1}; do
  for run in "${runs[@]}"; do
    label=${run%%|*}
    grep -qF "{\"label\":\"$label\",\"seed\":$seed," "$out" && continue
    read -r -a flags <<<"${run#*|}"
    file=$(tr -c 'A-Za-z0-9\n' '_' <<<"$label")_s$seed.csv
    line=$(timeout 1200 "${LOWBIT_MPIRUN[@]}" -np "$ranks" "${LOWBIT_GPT_BIN:-$LOWBIT_BUILD/examples/gpt/gpt}" --steps 600 \
      --eval_interval 50 --seed "$seed" --metrics_csv "$csv_dir/$file" "${flags[@]}" "$@" |
      grep -o '{"example".*}' || true)
    if [ -z "$line" ]; then
      echo "gpt_quality.sh: '$label' seed $seed produced no result" >&2
      continue
    fi
    echo "{\"label\":\"$label\",\"seed\":$seed,\"metrics_csv\":\"$file\",${line#\{}" | tee -a "$out"
  done
done
/usr/bin/python3 "$LOWBIT_ROOT/scripts/gpt_table.py" "$out"
/usr/bin/python3 "$LOWBIT_ROOT/scripts/plot_metrics.py" --out "${LOWBIT_GPT_PLOT:-$LOWBIT_BUILD/gpt_quality.png}" \
  --runs "$out" --csv_dir "$csv_dir" --seed 1
