#!/usr/bin/env bash
# All tests: installs what is missing, builds, and runs CTest (unit tests,
# mpirun -np 2 and 4, torchrun, failure injection, the example end to end, and
# the 3-epoch accuracy check). Extra arguments go to ctest, e.g. -L unit.
#
#   ./scripts/test.sh --sanitize=address,undefined [ctest args]
#   ./scripts/test.sh --sanitize=thread [ctest args]
# build everything with the sanitizers in build-asan/ (build-tsan/) and run the
# unit tests and the 2-rank tests under them (ctest args replace that choice).
# Known reports of OpenMPI and LibTorch, which are not built with the
# sanitizer, are suppressed by scripts/sanitizers/*.supp, each entry with its
# reason (docs/reliability.md). LOWBIT_TARGETS=... builds only those targets.
#
#   ./scripts/test.sh --torch2 [--sanitize=...] [ctest args]
# the same against LibTorch 2.x: PyPI's torch wheel, installed into
# .venv/torch2, built in build-torch2/ (scripts/common.sh, docs/versions.md).
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ "${1:-}" = --torch2 ]; then
  LOWBIT_TORCH=2
  shift
fi
sanitize=
if [[ "${1:-}" == --sanitize=* ]]; then
  sanitize=${1#--sanitize=}
  shift
  case "$sanitize" in
    address,undefined | address | undefined) LOWBIT_BUILD=${LOWBIT_SANITIZE_BUILD:-$LOWBIT_ROOT/build-asan} ;;
    thread) LOWBIT_BUILD=${LOWBIT_SANITIZE_BUILD:-$LOWBIT_ROOT/build-tsan} ;;
    *) echo "test.sh: --sanitize must be address,undefined or thread, got '$sanitize'" >&2; exit 2 ;;
  esac
  LOWBIT_CMAKE_ARGS="-DLOWBIT_SANITIZE=$sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_BUILD_BENCH=OFF"
  supp=$LOWBIT_ROOT/scripts/sanitizers
  # Whole allocation stacks (through OpenMPI's and LibTorch's code, built
  # without frame pointers), so that the suppressions can match them.
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:fast_unwind_on_malloc=0:malloc_context_size=40:${ASAN_OPTIONS:-}"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp:${UBSAN_OPTIONS:-}"
  export TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=1:second_deadlock_stack=1:${TSAN_OPTIONS:-}"
  # The unit tests and every test executable under mpirun -np 2; not the
  # 4-rank, torchrun, whole-example and simulated-network runs.
  [ $# -gt 0 ] || set -- -LE 'netsim' -E '\.mpi4$|\.torchrun|consumer|^example_|accuracy|cuda_twin'
fi
lowbit_setup
cd "$LOWBIT_BUILD"
# Two jobs on two cores; multi-rank tests oversubscribe anyway.
exec ctest --output-on-failure -j "${LOWBIT_TEST_JOBS:-2}" "$@"
