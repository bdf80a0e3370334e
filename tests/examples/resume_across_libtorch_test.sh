#!/usr/bin/env bash
# resume_across_libtorch_test.sh WORK_DIR OTHER_FASHION_MNIST THIS_FASHION_MNIST:
# a checkpoint written by the example built against the other LibTorch line
# (Debian's 1.13 beside PyPI's 2.11: build/ and build-torch2/) must be
# refused on resume with an error that names both versions, never resumed
# with the optimizer's state on other parameters. Skipped when the other
# build is not there (CI builds 1.13 first, so the 2.11 suite runs it).
set -euo pipefail
work=$1 other=$2 this=$3
if [ ! -x "$other" ]; then
  echo "[  SKIPPED ] no other LibTorch build at $other"
  exit 0
fi
rm -rf "$work"; mkdir -p "$work"
common=(--max_train_examples 2048 --batch_size 32 --seed 3 --optimizer adam)
"$other" "${common[@]}" --epochs 1 --checkpoint "$work/ckpt" >"$work/write.log" 2>&1
rc=0
out=$("$this" "${common[@]}" --epochs 2 --resume "$work/ckpt" 2>&1) || rc=$?
printf '%s\n' "$out" | grep -i error | head -n 3
[ "$rc" -ne 0 ] || { echo "FAIL: the resume across LibTorch versions succeeded"; exit 1; }
grep -E -q -- "was written by lowbit built against LibTorch [0-9]+\.[0-9]+.*this program is built against LibTorch [0-9]+\.[0-9]+" \
  <<<"$out" || { echo "FAIL: the error does not name both LibTorch versions"; exit 1; }
echo "OK: refused, naming both versions"
