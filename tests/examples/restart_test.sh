#!/usr/bin/env bash
# restart_test.sh WORK_DIR MODE EVERY LAUNCH... -- EXAMPLE ARGS...
#
# A job that restarts itself after a worker dies ends exactly where an
# uninterrupted run ends. First LAUNCH runs the example straight through. Then
# it runs again with --checkpoint WORK_DIR/ckpt --resume auto --checkpoint_every
# EVERY, and once the first checkpoint (within the first epoch when EVERY is
# less than an epoch's steps) is complete, one worker is SIGKILLed. MODE says who restarts the job:
#   torchrun  LAUNCH is torchrun --max_restarts N ...: its agent restarts the workers;
#   loop      LAUNCH is mpirun ...: this script reruns it while it fails, at most 3 times
#             (the loop docs/train.md shows).
# Passes when the job restarted (rank 0 printed "continuing from"), finished,
# and its param_checksum equals the straight run's. CTest's TIMEOUT bounds it.
set -u
work=$1 mode=$2 every=$3
shift 3
launch=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do launch+=("$1"); shift; done
shift
example=("$@")
rm -rf "$work"; mkdir -p "$work"
checksum() { grep -o '"param_checksum":"[0-9a-f]*"' "$1" | tail -n 1; }

"${launch[@]}" "${example[@]}" >"$work/straight.log" 2>&1 || { cat "$work/straight.log"; echo "FAIL: the straight run failed"; exit 1; }
straight=$(checksum "$work/straight.log")

restartable=("${launch[@]}" "${example[@]}" --checkpoint "$work/ckpt" --resume auto --checkpoint_every "$every")
"${restartable[@]}" >"$work/run0.log" 2>&1 &
launcher=$!
# The first checkpoint is complete once its manifest exists (Note [Checkpoint files]).
until [ -f "$work/ckpt/manifest" ]; do
  kill -0 "$launcher" 2>/dev/null || { cat "$work/run0.log"; echo "FAIL: the job ended before its first checkpoint"; exit 1; }
  sleep 0.05
done
workers=($(pgrep -P "$launcher" | sort -n))
[ ${#workers[@]} -ge 2 ] || { cat "$work/run0.log"; echo "FAIL: found ${#workers[@]} workers under the launcher"; exit 1; }
kill -9 "${workers[1]}"
echo "killed worker pid ${workers[1]} after $(sed -n 's/^generation //p' "$work/ckpt/manifest") checkpoint(s)"
wait "$launcher"; rc=$?
logs=("$work/run0.log")
if [ "$mode" = loop ]; then
  # What docs/train.md shows: rerun the same command while it fails.
  attempt=0
  while [ "$rc" -ne 0 ] && [ "$attempt" -lt 3 ]; do
    attempt=$((attempt + 1))
    echo "run $((attempt - 1)) exited $rc; restarting"
    "${restartable[@]}" >"$work/run$attempt.log" 2>&1; rc=$?
    logs+=("$work/run$attempt.log")
  done
fi
last=${logs[-1]}
tail -n 4 "$last"
[ "$rc" -eq 0 ] || { cat "${logs[@]}" | tail -n 40; echo "FAIL: the job exited $rc"; exit 1; }
cat "${logs[@]}" | grep -q 'resume auto: continuing from' || { echo "FAIL: no run continued from the checkpoint"; exit 1; }
resumed=$(checksum "$last")
echo "straight:  $straight"
echo "restarted: $resumed"
[ -n "$straight" ] && [ "$straight" = "$resumed" ] || { echo "FAIL: the restarted job ends elsewhere"; exit 1; }
echo "OK: restarted after a worker was killed and ended with the uninterrupted run's parameters"
