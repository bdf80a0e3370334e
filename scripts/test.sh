#!/usr/bin/env bash
# All tests: installs what is missing, builds, and runs CTest (unit tests,
# mpirun -np 2 and 4, torchrun, failure injection, the example end to end, and
# the 3-epoch accuracy check). Extra arguments go to ctest, e.g. -L unit.
set -euo pipefail
source "$(dirname "$0")/common.sh"
lowbit_setup
cd "$LOWBIT_BUILD"
# Two jobs on two cores; multi-rank tests oversubscribe anyway.
exec ctest --output-on-failure -j "${LOWBIT_TEST_JOBS:-2}" "$@"
