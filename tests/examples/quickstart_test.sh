#!/usr/bin/env bash
# quickstart_test.sh WORK_DIR EPOCHS MIN_ACCURACY LAUNCH...: trains EPOCHS
# epochs with a checkpoint, requires the last test accuracy >= MIN_ACCURACY,
# then asks for one more epoch: the run must resume after epoch EPOCHS.
set -euo pipefail
work=$1; epochs=$2; min=$3; shift 3
rm -rf "$work"; mkdir -p "$work"
out=$("$@" --epochs "$epochs" --checkpoint "$work/ckpt")
echo "$out"
acc=$(echo "$out" | grep -E "(^|:)epoch $epochs " | sed 's/.*test_accuracy \([0-9.]*\).*/\1/')
awk -v a="$acc" -v m="$min" 'BEGIN { exit !(a != "" && a + 0 >= m + 0) }' \
  || { echo "quickstart: test accuracy '$acc' after $epochs epochs, wanted >= $min"; exit 1; }
out=$("$@" --epochs $((epochs + 1)) --checkpoint "$work/ckpt")
echo "$out"
echo "$out" | grep -Eq "(^|:)epoch $((epochs + 1)) " && ! echo "$out" | grep -Eq "(^|:)epoch 1 " \
  || { echo "quickstart: the second run did not resume after epoch $epochs"; exit 1; }
