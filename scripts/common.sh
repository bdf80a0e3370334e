# Shared by demo.sh, test.sh and bench.sh: installs what is missing (Debian
# packages only), configures and builds lowbit into build/ (LOWBIT_BUILD;
# LOWBIT_CMAKE_ARGS adds configure options, LOWBIT_TARGETS limits what is
# built). Quiet when nothing needs doing. Source it; it defines lowbit_setup
# and LOWBIT_MPIRUN.

LOWBIT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOWBIT_BUILD=${LOWBIT_BUILD:-$LOWBIT_ROOT/build}
LOWBIT_PACKAGES=(cmake ninja-build g++ ccache pkg-config zlib1g-dev libtorch-dev libopenmpi-dev openmpi-bin
  libabsl-dev libgloo-dev libgtest-dev libgmock-dev googletest libbenchmark-dev python3-torch
  dataset-fashion-mnist bible-kjv bible-kjv-text fortunes-min libopenblas0-openmp python3-matplotlib)

lowbit_install_packages() {
  local missing=()
  for p in "${LOWBIT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "lowbit: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's LibTorch calls BLAS through the libblas.so.3 alternative, which
# without OpenBLAS is the reference BLAS (about 15x slower on the examples;
# docs/benchmarks.md). Point it, and liblapack.so.3, at OpenBLAS's OpenMP
# build: it follows torch::set_num_threads (the examples' --threads), so
# ranks x threads never oversubscribe the cores, and it was the fastest of
# the three builds here (scripts/bench.sh blas).
lowbit_select_blas() {
  local arch dir sudo=""
  arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  dir=/usr/lib/$arch/openblas-openmp
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  for lib in libblas.so.3 liblapack.so.3; do
    [ -f "$dir/$lib" ] || continue
    [ "$(update-alternatives --query "$lib-$arch" 2>/dev/null | sed -n 's/^Value: //p')" = "$dir/$lib" ] && continue
    echo "lowbit: pointing $lib at OpenBLAS (OpenMP build)"
    $sudo update-alternatives --set "$lib-$arch" "$dir/$lib" >/dev/null
  done
}

lowbit_setup() {
  lowbit_install_packages
  lowbit_select_blas
  if [ ! -f "$LOWBIT_BUILD/build.ninja" ]; then
    echo "lowbit: configuring $LOWBIT_BUILD"
    mkdir -p "$LOWBIT_BUILD"
    cmake -S "$LOWBIT_ROOT" -B "$LOWBIT_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${LOWBIT_CMAKE_ARGS:-} \
      >"$LOWBIT_BUILD/configure.log" 2>&1 \
      || { cat "$LOWBIT_BUILD/configure.log"; return 1; }
    grep -A 12 'lowbit .* configuration' "$LOWBIT_BUILD/configure.log" | sed 's/^-- //'
  fi
  # Two cores: two jobs. Only errors and the final line are shown.
  local log="$LOWBIT_BUILD/build.log"
  # LOWBIT_TARGETS: only these (default: everything).
  # shellcheck disable=SC2086
  if ! ninja -C "$LOWBIT_BUILD" -j "${LOWBIT_JOBS:-2}" ${LOWBIT_TARGETS:-} >"$log" 2>&1; then
    grep -E -A 5 'error|FAILED' "$log" | head -n 60
    echo "lowbit: build failed; full log in $log"
    return 1
  fi
  grep -q 'no work to do' "$log" || echo "lowbit: built $(tail -n 1 "$log" | sed 's/^\[[0-9/]*\] //')"
}

# mpirun as root on a small machine needs these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
LOWBIT_MPIRUN=(mpirun --oversubscribe --bind-to none)
