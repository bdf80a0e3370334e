#!/usr/bin/env bash
# resume_test.sh WORK_DIR LAUNCH...: two epochs straight and one epoch, a stop
# and one resumed epoch must end with the same param_checksum.
set -euo pipefail
work=$1; shift
rm -rf "$work"; mkdir -p "$work"
common=(--max_train_examples 6144 --batch_size 32 --seed 3)
[[ " $* " == *" --optimizer "* ]] || common+=(--optimizer adam)
checksum() { grep -o '"param_checksum":"[0-9a-f]*"' | tail -n 1; }
straight=$("$@" "${common[@]}" --epochs 2 | checksum)
"$@" "${common[@]}" --epochs 1 --checkpoint "$work/ckpt" >/dev/null
resumed=$("$@" "${common[@]}" --epochs 2 --resume "$work/ckpt" | checksum)
echo "straight: $straight"
echo "resumed:  $resumed"
[ -n "$straight" ] && [ "$straight" = "$resumed" ]
