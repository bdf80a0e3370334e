#!/usr/bin/env bash
# The training-time methods of docs/training_methods.md, measured: SPAM and
# Stable-SPAM against AdamW (1x and 3x the learning rate, fp32 and W4A4),
# OFQ against LSQ (W4A4, W2A2, with and without the query-key
# reparameterisation), Tequila against plain ternary, DKM against uniform LSQ
# (2, 3, 4 bits), E2E-QP at W4 and W2 from a trained model, and ComPEFT of a
# Bible -> fortunes fine-tuning. GPT tiny on 4 ranks (scripts/gpt_quality.sh's
# budget: 600 steps of 16 x 64 characters per rank) and Fashion-MNIST on 4
# ranks (3 epochs; 1 for the rows that start from a trained model).
#
# Writes JSON lines to $LOWBIT_TM_OUT (default build/training_methods/):
# gpt_*.jsonl, fashion.jsonl, compeft.log; a row already there is not run
# again, so an interrupted sweep continues. Then prints the tables
# (scripts/training_methods_table.py). About 2.5 hours on two cores.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
out=${LOWBIT_TM_OUT:-$LOWBIT_BUILD/training_methods}
mkdir -p "$out"
gpt=$LOWBIT_BUILD/examples/gpt/gpt
fashion=$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist
bible=$LOWBIT_BUILD/data/bible-kjv.txt
fortunes=$LOWBIT_BUILD/data/fortunes.txt
gpt_rows() {  # gpt_rows NAME "label|flags;..."
  LOWBIT_GPT_OUT=$out/gpt_$1.jsonl LOWBIT_GPT_CSV_DIR=$out/gpt_$1_csv LOWBIT_GPT_PLOT=$out/gpt_$1.png \
    LOWBIT_GPT_RUNS=$2 "$(dirname "$0")/gpt_quality.sh" </dev/null
}
gpt_rows spam "AdamW 1e-3|--lr 1e-3;AdamW 3e-3|--lr 3e-3;SPAM 1e-3|--optimizer spam --lr 1e-3;\
SPAM 3e-3|--optimizer spam --lr 3e-3;Stable-SPAM 1e-3|--optimizer stable_spam --lr 1e-3;\
Stable-SPAM 3e-3|--optimizer stable_spam --lr 3e-3;Stable-SPAM 8-bit 1e-3|--optimizer stable_spam8bit --lr 1e-3;\
W4A4 AdamW 1e-3|--qat w4a4_lsq --lr 1e-3;W4A4 AdamW 3e-3|--qat w4a4_lsq --lr 3e-3;\
W4A4 SPAM 3e-3|--qat w4a4_lsq --optimizer spam --lr 3e-3;W4A4 Stable-SPAM 1e-3|--qat w4a4_lsq --optimizer stable_spam --lr 1e-3;\
W4A4 Stable-SPAM 3e-3|--qat w4a4_lsq --optimizer stable_spam --lr 3e-3;\
W4A4 Stable-SPAM 8-bit 3e-3|--qat w4a4_lsq --optimizer stable_spam8bit --lr 3e-3;\
W4A4 AdamW 1e-2|--qat w4a4_lsq --lr 1e-2;W4A4 Stable-SPAM 1e-2|--qat w4a4_lsq --optimizer stable_spam --lr 1e-2"
base=$out/gpt_base.pt
gpt_rows qat "fp32 base|--save_model $base;W2A2 LSQ|--qat w2a2_lsq;W4A4 OFQ|--qat w4a4_ofq;W2A2 OFQ|--qat w2a2_ofq;\
W4A4 OFQ+QKR|--qat w4a4_ofq --qk_reparam;W2A2 OFQ+QKR|--qat w2a2_ofq --qk_reparam;\
ternary STE|--qat ternary_ste;ternary Tequila|--qat ternary_tequila;\
W4 E2E-QP|--init_model $base --qat w4_lsq --e2e_qp --steps 200 --lr 5e-3 --lr_warmup 10;\
W2 E2E-QP|--init_model $base --qat w2_lsq --e2e_qp --steps 200 --lr 5e-3 --lr_warmup 10;\
W4 QAT fine-tune|--init_model $base --qat w4_lsq --steps 200 --lr 1e-3 --lr_warmup 10;\
W2 QAT fine-tune|--init_model $base --qat w2_lsq --steps 200 --lr 1e-3 --lr_warmup 10;\
W4 DKM fine-tune|--init_model $base --qat dkm4 --steps 200 --lr 1e-3 --lr_warmup 10;\
W2 DKM fine-tune|--init_model $base --qat dkm2 --steps 200 --lr 1e-3 --lr_warmup 10;\
fp32 continued 200 steps|--init_model $base --steps 200 --lr 1e-3 --lr_warmup 10"
gpt_rows dkm "W4 LSQ|--qat w4_lsq;W3 LSQ|--qat w3_lsq;W2 LSQ|--qat w2_lsq;DKM 4-bit|--qat dkm4;DKM 3-bit|--qat dkm3;\
DKM 2-bit|--qat dkm2;DKM 4-bit tau 0.3|--qat dkm4 --dkm_temperature 0.3"
gpt_rows extra "compeft 5% (EF)|--hook compeft --density 0.05"
# ComPEFT: a base on the Bible with the fortunes' bytes in its vocabulary,
# fine-tuned on fortunes-min for 200 steps; the task vector at 1, 5 and 10%.
if [ ! -s "$out/compeft.log" ]; then
  timeout 1800 "${LOWBIT_MPIRUN[@]}" -np 4 "$gpt" --steps 600 --eval_interval 100 --sample_chars 0 \
    --vocab_corpus "$fortunes" --save_model "$out/gpt_base_union.pt" </dev/null >"$out/compeft_base.log"
  timeout 1800 "${LOWBIT_MPIRUN[@]}" -np 4 "$gpt" --steps 200 --eval_interval 50 --lr 5e-4 --lr_warmup 10 \
    --corpus "$fortunes" --vocab_corpus "$bible" --init_model "$out/gpt_base_union.pt" \
    --compeft_base "$out/gpt_base_union.pt" --compeft_alphas 0.5,1,2,4,6,8,12,16,24,32,48 </dev/null >"$out/compeft.log"
fi
f=$out/fashion.jsonl
touch "$f"
fashion_row() {  # fashion_row LABEL FLAGS...
  local label=$1
  shift
  grep -qF "{\"label\":\"$label\"," "$f" && return
  local line
  line=$(timeout 1800 "${LOWBIT_MPIRUN[@]}" -np 4 "$fashion" --seed 1 "$@" </dev/null | tail -n 1)
  echo "{\"label\":\"$label\",${line#\{}" | tee -a "$f"
}
fb=$out/fashion_base.pt
fashion_row "fp32 Adam (base)" --epochs 3 --save_model "$fb"
for lr in 1e-3 3e-3; do
  fashion_row "AdamW $lr" --epochs 3 --optimizer adamw --lr $lr
  fashion_row "SPAM $lr" --epochs 3 --optimizer spam --lr $lr
  fashion_row "Stable-SPAM $lr" --epochs 3 --optimizer stable_spam --lr $lr
  fashion_row "W4A4 AdamW $lr" --epochs 3 --qat w4a4_lsq --optimizer adamw --lr $lr
  fashion_row "W4A4 Stable-SPAM $lr" --epochs 3 --qat w4a4_lsq --optimizer stable_spam --lr $lr
done
fashion_row "Stable-SPAM 8-bit 1e-3" --epochs 3 --optimizer stable_spam8bit --lr 1e-3
fashion_row "W4A4 SPAM 3e-3" --epochs 3 --qat w4a4_lsq --optimizer spam --lr 3e-3
fashion_row "W4A4 LSQ" --epochs 3 --qat w4a4_lsq
fashion_row "W2A2 LSQ" --epochs 3 --qat w2a2_lsq
fashion_row "W4A4 OFQ" --epochs 3 --qat w4a4_ofq
fashion_row "W2A2 OFQ" --epochs 3 --qat w2a2_ofq
fashion_row "ternary STE" --epochs 3 --qat ternary_ste
fashion_row "ternary Tequila" --epochs 3 --qat ternary_tequila
fashion_row "ternary Tequila lambda 0.05" --epochs 3 --qat ternary_tequila --dead_zone_lambda 0.05
fashion_row "ternary Tequila lambda 0.5" --epochs 3 --qat ternary_tequila --dead_zone_lambda 0.5
fashion_row "DKM 4-bit tau 0.3" --epochs 3 --qat dkm4 --dkm_temperature 0.3
for b in 4 3 2; do
  fashion_row "W$b LSQ" --epochs 3 --qat w${b}_lsq
  fashion_row "DKM $b-bit" --epochs 3 --qat dkm$b
done
for b in 4 2; do
  fashion_row "W$b E2E-QP" --epochs 1 --init_model "$fb" --qat w${b}_lsq --e2e_qp --lr 5e-3
  fashion_row "W$b QAT fine-tune" --epochs 1 --init_model "$fb" --qat w${b}_lsq --lr 1e-3
  fashion_row "W$b DKM fine-tune" --epochs 1 --init_model "$fb" --qat dkm$b --lr 1e-3
done
"$LOWBIT_BUILD/bench/qat_bench" --floats 4096 --features 64 --batch 8 | grep dkm_memory >"$out/dkm_memory.jsonl"
/usr/bin/python3 "$LOWBIT_ROOT/scripts/training_methods_table.py" "$out"
