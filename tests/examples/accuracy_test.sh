#!/usr/bin/env bash
# accuracy_test.sh MIN_ACCURACY LAUNCH...: the run's final JSON must report
# test_accuracy >= MIN_ACCURACY.
set -euo pipefail
min=$1; shift
out=$("$@")
printf '%s\n' "$out" | tail -n 5
acc=$(printf '%s\n' "$out" | grep -o '"test_accuracy":[0-9.]*' | tail -n 1 | cut -d: -f2)
[ -n "$acc" ] || { echo "FAIL: no test_accuracy in the output"; exit 1; }
awk -v a="$acc" -v m="$min" 'BEGIN { if (a + 0 >= m + 0) { print "OK: " a " >= " m; exit 0 } print "FAIL: " a " < " m; exit 1 }'
