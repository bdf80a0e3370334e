# Shared by demo.sh, test.sh and bench.sh: installs what is missing (Debian
# packages; with --torch2 also PyPI's torch wheel), configures and builds
# lowbit into build/ (LOWBIT_BUILD; LOWBIT_CMAKE_ARGS adds configure options,
# LOWBIT_TARGETS limits what is built). Quiet when nothing needs doing. Source
# it; it defines lowbit_setup, lowbit_use_torch2 and LOWBIT_MPIRUN.
#
# LibTorch 2.x: a script's first argument --torch2 (or LOWBIT_TORCH=2) builds
# against the torch wheel pinned in scripts/requirements-torch2.txt (a CUDA
# build; it runs without a GPU), installed by pip into the project-local
# virtual environment .venv/torch2 (LOWBIT_TORCH2_VENV), into LOWBIT_BUILD
# with -torch2 appended (build-torch2/, build-asan-torch2/).
# The install is 4.7 GB (mostly the nvidia-* CUDA wheels), 64 s on a fresh
# environment here (docs/versions.md). LOWBIT_PYTHON is the Python whose
# torch matches the LibTorch built against (the peers and torchrun use it).

LOWBIT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOWBIT_BUILD=${LOWBIT_BUILD:-$LOWBIT_ROOT/build}
LOWBIT_PACKAGES=(cmake ninja-build g++ ccache pkg-config zlib1g-dev libtorch-dev libopenmpi-dev openmpi-bin
  libabsl-dev libgloo-dev libgtest-dev libgmock-dev googletest libbenchmark-dev python3-torch python3-venv
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

LOWBIT_PYTHON=/usr/bin/python3

# Installs the pinned wheel if the virtual environment lacks it, and points the
# build at it. Idempotent; the pins' file is the install's stamp.
lowbit_use_torch2() {
  local venv=${LOWBIT_TORCH2_VENV:-$LOWBIT_ROOT/.venv/torch2}
  local req=$LOWBIT_ROOT/scripts/requirements-torch2.txt
  if ! cmp -s "$req" "$venv/.lowbit-requirements" 2>/dev/null; then
    echo "lowbit: installing $(grep -m1 '^torch==' "$req") from PyPI into $venv (4.7 GB)"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" \
      || { echo "lowbit: pip could not install $req into $venv"; return 1; }
    cp "$req" "$venv/.lowbit-requirements"
  fi
  local root
  root=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  LOWBIT_BUILD=$LOWBIT_BUILD-torch2
  LOWBIT_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=$root ${LOWBIT_CMAKE_ARGS:-}"
  LOWBIT_PYTHON=$venv/bin/python
}

lowbit_setup() {
  lowbit_install_packages
  lowbit_select_blas
  if [ "${LOWBIT_TORCH:-}" = 2 ]; then lowbit_use_torch2; fi
  # Configured anew when the configure options changed (another LibTorch's
  # cached paths must not survive into the new build).
  local args="-G Ninja -DCMAKE_BUILD_TYPE=Release ${LOWBIT_CMAKE_ARGS:-}"
  if [ ! -f "$LOWBIT_BUILD/build.ninja" ] || [ "$(cat "$LOWBIT_BUILD/.lowbit-configure-args" 2>/dev/null)" != "$args" ]; then
    echo "lowbit: configuring $LOWBIT_BUILD"
    mkdir -p "$LOWBIT_BUILD"
    rm -f "$LOWBIT_BUILD/CMakeCache.txt"
    # shellcheck disable=SC2086
    cmake -S "$LOWBIT_ROOT" -B "$LOWBIT_BUILD" $args >"$LOWBIT_BUILD/configure.log" 2>&1 \
      || { cat "$LOWBIT_BUILD/configure.log"; return 1; }
    echo "$args" >"$LOWBIT_BUILD/.lowbit-configure-args"
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
