#!/usr/bin/env bash
# expect_success.sh REGEX COMMAND...: passes when COMMAND exits 0 and its output
# matches the extended regex REGEX.
set -u
regex=$1; shift
out=$("$@" 2>&1); rc=$?
printf '%s\n' "$out" | tail -n 8
if [ "$rc" -ne 0 ]; then echo "FAIL: exit $rc from: $*"; exit 1; fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then echo "FAIL: output does not match /$regex/"; exit 1; fi
echo "OK"
