#!/usr/bin/env bash
# Benchmarks (JSON lines on stdout): allreduce and DDP step overhead on 2 and 4
# local MPI ranks, and Gloo allreduce under torchrun (2 processes).
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
for n in 2 4; do
  "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/allreduce_bench" "$@"
  "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/ddp_bench"
done
# Gloo as torchrun jobs use it, with no MPI in the process.
/usr/bin/python3 -m torch.distributed.run --standalone --nproc_per_node 2 --redirects 1 --tee 1 --no_python \
  "$LOWBIT_BUILD/bench/allreduce_bench" --max_log2 24 2>&1 | grep -o '{.*}'
