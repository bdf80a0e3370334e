#!/usr/bin/env bash
# gpt_quick_test.sh MAX_VAL_LOSS LAUNCH...: a short run must exit 0, print a
# text sample between its markers, and end with a validation loss below
# MAX_VAL_LOSS nats per character (a character unigram model scores about
# 2.85 on this text, the uniform guess ln 73 = 4.29).
set -euo pipefail
max=$1; shift
out=$("$@" 2>&1)
printf '%s\n' "$out" | tail -n 8
# Here-strings, not pipes: grep -q stops reading at its match, and under
# pipefail the writer's SIGPIPE would fail the check.
grep -q -- '^--- sample (seed' <<<"$out" || { echo "FAIL: no sample"; exit 1; }
grep -q -- '^--- end of sample ---$' <<<"$out" || { echo "FAIL: sample not closed"; exit 1; }
loss=$(printf '%s\n' "$out" | grep -o '"val_loss":[0-9.]*' | tail -n 1 | cut -d: -f2)
[ -n "$loss" ] || { echo "FAIL: no val_loss"; exit 1; }
awk -v l="$loss" -v m="$max" 'BEGIN { exit !(l < m) }' || { echo "FAIL: val_loss $loss >= $max"; exit 1; }
echo "OK: val_loss $loss < $max"
