#!/usr/bin/env bash
# run.sh BUILD_DIR WORK_DIR: installs lowbit from BUILD_DIR into WORK_DIR/prefix,
# then configures, builds and runs the consumer project against it.
set -euo pipefail
build=$1; work=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"; mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  $(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache) >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
