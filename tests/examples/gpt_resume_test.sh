#!/usr/bin/env bash
# gpt_resume_test.sh WORK_DIR LAUNCH...: 20 steps straight, and 10 steps, a
# stop and 10 resumed steps, must end with the same param_checksum (the
# schedule spans 20 steps in both). Both halves run with --resume auto: the
# first finds no checkpoint and starts fresh, the second continues.
set -euo pipefail
work=$1; shift
rm -rf "$work"; mkdir -p "$work"
common=(--steps 20 --eval_interval 10 --val_windows 16 --batch_size 4 --sample_chars 0 --lr_warmup 4 --seed 3)
checksum() { grep -o '"param_checksum":"[0-9a-f]*"' | tail -n 1; }
straight=$("$@" "${common[@]}" | checksum)
first=$("$@" "${common[@]}" --stop_at 10 --checkpoint "$work/ckpt" --resume auto)
grep -q 'resume auto: no checkpoint' <<<"$first" || { echo "FAIL: the first half did not start fresh"; exit 1; }
second=$("$@" "${common[@]}" --checkpoint "$work/ckpt" --resume auto)
grep -q 'resume auto: continuing from' <<<"$second" || { echo "FAIL: the second half did not continue"; exit 1; }
resumed=$(checksum <<<"$second")
echo "straight: $straight"
echo "resumed:  $resumed"
[ -n "$straight" ] && [ "$straight" = "$resumed" ]
