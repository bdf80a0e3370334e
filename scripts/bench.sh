#!/usr/bin/env bash
# Benchmarks (JSON lines on stdout): allreduce and DDP step overhead on 2 and 4
# local MPI ranks.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
for n in 2 4; do
  "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/allreduce_bench" "$@"
  "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/ddp_bench"
done
