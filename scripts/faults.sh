#!/usr/bin/env bash
# Fault injection on the simulated network (scripts/netsim): Fashion-MNIST on
# 4 ranks with a checkpoint every 40 steps; once the first checkpoint is
# complete, rank 1's host breaks: its link goes down (linkdown), its process
# stops (freeze), or its link slows to 64 kbit/s (crawl). A run passes when
#   - the job fails (non-zero exit),
#   - the other ranks' error names the collective that timed out,
#   - every other rank ended within the collective timeout + 10 s of the fault,
#   - the checkpoint resumes: a plain mpirun of the same command with
#     --resume finishes the training.
#
#   scripts/faults.sh                       # 3 runs of each fault
#   LOWBIT_FAULT_RUNS=1 LOWBIT_FAULT_KINDS=freeze scripts/faults.sh   # what CTest runs (faults_netsim_freeze)
#
# Root only (network namespaces). Prints one JSON line per run, then a table
# of runs tried and passed per fault. Exit status 0 when every run passed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
# CTest runs it on a build it has just made (LOWBIT_FAULT_BUILT=1): no rebuild.
[ -n "${LOWBIT_FAULT_BUILT:-}" ] || lowbit_setup
runs=${LOWBIT_FAULT_RUNS:-3}
kinds=${LOWBIT_FAULT_KINDS:-linkdown freeze crawl}
timeout_s=${LOWBIT_FAULT_TIMEOUT_S:-20}
out=${LOWBIT_FAULT_OUT:-$LOWBIT_BUILD/faults}
rm -rf "$out"; mkdir -p "$out"
example=("$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 2 --batch_size 32 --max_train_examples 20000
  --hook qsgd --optimizer adam8bit)
results=$out/results.jsonl
: >"$results"
for kind in $kinds; do
  for ((run = 1; run <= runs; run++)); do
    dir=$out/$kind-$run
    mkdir -p "$dir"
    # Every run has a timeout: a hang fails it instead of stalling the script.
    set +e
    OMP_NUM_THREADS=1 LOWBIT_TIMEOUT_S=$timeout_s timeout 300 "$LOWBIT_ROOT/scripts/netsim" --ranks 4 \
      --fault "$kind" --fault-rank 1 --fault-when-file "$dir/ckpt/manifest" -- \
      "${example[@]}" --checkpoint "$dir/ckpt" --checkpoint_every 40 </dev/null >"$dir/log.txt" 2>&1
    rc=$?
    OMP_NUM_THREADS=1 timeout 300 "${LOWBIT_MPIRUN[@]}" -np 4 "${example[@]}" --resume "$dir/ckpt" \
      </dev/null >"$dir/resume.txt" 2>&1
    resume_rc=$?
    set -e
    /usr/bin/python3 - "$kind" "$run" "$rc" "$resume_rc" "$timeout_s" "$dir" <<'PY' | tee -a "$results"
import json, re, sys
kind, run, rc, resume_rc, timeout_s, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
log = open(d + "/log.txt", errors="replace").read()
fault = next((json.loads(l) for l in log.splitlines() if l.startswith('{"netsim_fault"')), None)
message = re.search(r"lowbit mpi (\w+ #\d+)[^\n]*did not complete within", log)
others = fault["other_ranks_ended_s"] if fault else None
resumed = resume_rc == 0 and '"param_checksum"' in open(d + "/resume.txt", errors="replace").read()
row = {"fault": kind, "run": run, "exit_status": rc, "fired": fault is not None, "other_ranks_ended_s": others,
       "all_ranks_ended_s": fault["all_ranks_ended_s"] if fault else None,
       "message": message.group(0)[:90] if message else None, "resumed": resumed}
row["passed"] = (rc != 0 and fault is not None and others is not None and others <= timeout_s + 10
                 and message is not None and resumed)
print(json.dumps(row))
PY
  done
done
/usr/bin/python3 - "$results" "$timeout_s" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.OrderedDict()
for r in rows:
    by.setdefault(r["fault"], []).append(r)
print(f"| fault | runs | passed | other ranks ended after the fault (s, timeout {sys.argv[2]} s) | checkpoint resumed |")
print("|---|---|---|---|---|")
for kind, rs in by.items():
    ended = [r["other_ranks_ended_s"] for r in rs if r["other_ranks_ended_s"] is not None]
    span = f"{min(ended):.1f} - {max(ended):.1f}" if ended else "-"
    print(f"| {kind} | {len(rs)} | {sum(r['passed'] for r in rs)} | {span} | {sum(r['resumed'] for r in rs)}/{len(rs)} |")
sys.exit(0 if all(r["passed"] for r in rows) else 1)
PY
