#!/usr/bin/env bash
# expect_failure.sh REGEX COMMAND...: passes when COMMAND exits non-zero and
# its output (stdout and stderr) matches the extended regex REGEX.
set -u
regex=$1; shift
out=$("$@" 2>&1); rc=$?
if [ "$rc" -eq 0 ]; then
  printf '%s\n' "$out" | tail -n 30
  echo "FAIL: expected a non-zero exit from: $*"; exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then
  printf '%s\n' "$out" | tail -n 40
  echo "FAIL: exit $rc, but the output does not match /$regex/"; exit 1
fi
printf '%s\n' "$out" | grep -E -- "$regex" | head -n 3
echo "OK: exit $rc and the output matches /$regex/"
