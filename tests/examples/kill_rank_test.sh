#!/usr/bin/env bash
# kill_rank_test.sh MPIRUN... -- EXAMPLE ARGS...: starts the example under
# mpirun, SIGKILLs one rank once training has started, and passes when mpirun
# exits non-zero naming the dead rank. CTest's TIMEOUT bounds the whole run.
set -u
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" >"$log" 2>&1 &
launcher=$!
# Training has started once rank 0 printed its header line.
until grep -q '^fashion_mnist:' "$log"; do
  kill -0 "$launcher" 2>/dev/null || { cat "$log"; echo "FAIL: mpirun ended before training started"; exit 1; }
  sleep 0.2
done
ranks=($(pgrep -P "$launcher" | sort -n))
[ ${#ranks[@]} -ge 2 ] || { echo "FAIL: found ${#ranks[@]} rank processes under mpirun"; exit 1; }
kill -9 "${ranks[1]}"
wait "$launcher"; rc=$?
tail -n 8 "$log"
[ "$rc" -ne 0 ] || { echo "FAIL: mpirun exited 0 although a rank was killed"; exit 1; }
grep -Eq 'exited on signal 9|Killed' "$log" || { echo "FAIL: the failure is not reported"; exit 1; }
echo "OK: mpirun exited $rc after a rank was killed"
