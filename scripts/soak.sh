#!/usr/bin/env bash
# Soak: a long Fashion-MNIST run on 4 ranks (mpirun) with a compression hook
# with error feedback, an 8-bit optimizer and a checkpoint every 1,000 steps,
# reporting every rank's resident memory, threads and open files as it goes.
#
#   scripts/soak.sh            # 20,680 steps (40 epochs of 517)
#   LOWBIT_SOAK_EPOCHS=4 scripts/soak.sh   # a short try
#
# Writes $LOWBIT_BUILD/soak/resources.csv (step, largest RSS of any rank in
# kB, threads, open files), prints it as a table, and passes when resident
# memory at the last report is within 5% of the report at step 2,048 (the
# start-up allocations done) and threads and open files did not grow. Every
# run has a timeout (LOWBIT_SOAK_TIMEOUT_S, default 3600 s).
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
epochs=${LOWBIT_SOAK_EPOCHS:-40}
out=$LOWBIT_BUILD/soak
rm -rf "$out"; mkdir -p "$out"
# 4 ranks x 29 images per step over the 60,000 training images: 517 steps an epoch.
# Batch 29 keeps steps short, so 20,000 of them fit in minutes.
OMP_NUM_THREADS=1 timeout "${LOWBIT_SOAK_TIMEOUT_S:-3600}" "${LOWBIT_MPIRUN[@]}" -np 4 \
  "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs "$epochs" --batch_size 29 \
  --hook qsgd --optimizer adam8bit --checkpoint "$out/ckpt" --checkpoint_every 1000 \
  --report_resources_every 512 "$@" </dev/null | tee "$out/log.txt"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = []
for line in open(out + "/log.txt"):
    if line.startswith('{"resources"'):
        rows.append(json.loads(line)["resources"])
with open(out + "/resources.csv", "w") as f:
    f.write("step,max_rss_kb,max_threads,max_open_files\n")
    for r in rows:
        f.write(f'{r["step"]},{r["max_rss_kb"]},{r["max_threads"]},{r["max_open_files"]}\n')
print("| step | largest RSS of a rank (MB) | threads | open files |")
print("|---|---|---|---|")
for r in rows:
    print(f'| {r["step"]} | {r["max_rss_kb"] / 1024:.1f} | {r["max_threads"]} | {r["max_open_files"]} |')
base = next((r for r in rows if r["step"] >= 2048), None)
if base is None or rows[-1]["step"] <= base["step"]:
    sys.exit("soak: too few reports to compare (run more epochs)")
last = rows[-1]
growth = last["max_rss_kb"] / base["max_rss_kb"] - 1
print(json.dumps({"soak": {"steps": last["step"], "rss_kb_at_2048": base["max_rss_kb"], "rss_kb_last": last["max_rss_kb"],
                           "rss_growth": round(growth, 4), "threads": [base["max_threads"], last["max_threads"]],
                           "open_files": [base["max_open_files"], last["max_open_files"]]}}))
ok = abs(growth) <= 0.05 and last["max_threads"] <= base["max_threads"] and last["max_open_files"] <= base["max_open_files"]
sys.exit(0 if ok else "soak: resident memory, threads or open files grew")
PY
