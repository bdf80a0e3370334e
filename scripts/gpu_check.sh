#!/usr/bin/env bash
# lowbit on a GPU machine, in one command and at most 8 minutes: the machine
# has PyTorch 2.x with CUDA and nvcc (/usr/local/cuda), no network and none
# of the Debian packages lowbit builds with, so what the build lacks travels
# in .gpu-deps/ (ignored by git): Debian's Abseil and GoogleTest unpacked,
# and PyPI's cmake and ninja wheels.
#
#   scripts/gpu_check.sh --prepare   on this machine: fills .gpu-deps/ (apt-get
#                                    download and pip download; about 30 MB)
#   scripts/gpu_check.sh             on the GPU machine (the device tool, with
#                                    carry [".gpu-deps"]): builds lowbit against
#                                    that machine's PyTorch, runs the CUDA twin
#                                    tests, every hook and 8-bit optimizer on
#                                    CUDA tensors and DDP over NCCL
#                                    (gpu_cuda_ops_test), and the CUDA kernels
#                                    against a device-to-device copy
#   scripts/gpu_check.sh --dry-run   on this machine: the same build, against
#                                    .venv/torch2's PyTorch (scripts/common.sh
#                                    --torch2), with Debian's LibTorch, Abseil,
#                                    GoogleTest and Gloo headers and CMake
#                                    packages hidden (as root), so that only
#                                    what .gpu-deps/ carries is found; the
#                                    GPU tests then skip and the bench says so
#
# Results go to $OUT when set (the device tool brings that folder back),
# else build-gpu/results/: gpu_check.log (everything), bench.jsonl (one line
# per kernel and size) and summary.json. LOWBIT_GPU_PYTHON names the Python
# whose torch to build against (default: python3, or .venv/torch2 with
# --dry-run). The exit status is non-zero if a step failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
deps=$root/.gpu-deps
mode=${1:-run}
case "$mode" in
  --prepare | --dry-run | run) ;;
  *) echo "gpu_check.sh: the argument must be --prepare or --dry-run (or none), got '$mode'" >&2; exit 2 ;;
esac
arch=x86_64-linux-gnu
debs=(libabsl-dev libabsl20220623 libgtest-dev libgmock-dev)
wheels=(cmake==3.31.6 ninja==1.11.1.4)

if [ "$mode" = --prepare ]; then
  rm -rf "$deps"
  mkdir -p "$deps/debs" "$deps/wheels" "$deps/root"
  (cd "$deps/debs" && apt-get download "${debs[@]}" >/dev/null 2>&1) \
    || { echo "gpu_check.sh: apt-get download ${debs[*]} failed (run apt-get update once)"; exit 1; }
  for d in "$deps"/debs/*.deb; do dpkg-deb -x "$d" "$deps/root"; done
  rm -rf "$deps/debs" "$deps/root/usr/share/doc" "$deps/root/usr/src"
  # Plain files for the links (libabsl_*.so -> .so.20220623): a copy of the
  # tree need not keep links.
  find "$deps/root" -type l | while read -r l; do cp --remove-destination "$(readlink -f "$l")" "$l"; done
  # pip from a throwaway virtual environment (Debian's python3 has none of its own).
  pipenv=$root/build-gpu/pip-venv
  [ -x "$pipenv/bin/pip" ] || { mkdir -p "$root/build-gpu" && /usr/bin/python3 -m venv "$pipenv"; }
  "$pipenv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 -d "$deps/wheels" "${wheels[@]}"
  echo "gpu_check.sh: .gpu-deps/ holds $(du -sh "$deps" | cut -f1): ${debs[*]} unpacked, ${wheels[*]} as wheels"
  exit 0
fi

[ -d "$deps/root/usr/lib/$arch/cmake/absl" ] \
  || { echo "gpu_check.sh: .gpu-deps/ is missing: run scripts/gpu_check.sh --prepare here first, and carry it"; exit 2; }

out=${OUT:-$root/build-gpu/results}
mkdir -p "$out"
log=$out/gpu_check.log
: >"$log"
say() { echo "gpu_check: $*" | tee -a "$log"; }
start=$(date +%s)
status=()

if [ "$mode" = --dry-run ]; then
  # Again under a mount namespace in which Debian's packages are hidden.
  if [ -z "${LOWBIT_GPU_CHECK_HIDDEN:-}" ] && [ "$(id -u)" -eq 0 ] && unshare --mount true 2>/dev/null; then
    hide=(/usr/include/torch /usr/include/ATen /usr/include/c10 /usr/include/caffe2 /usr/include/gloo
          /usr/include/absl /usr/include/gtest /usr/include/gmock
          /usr/lib/$arch/cmake/Torch /usr/lib/$arch/cmake/Caffe2 /usr/lib/$arch/cmake/ATen
          /usr/lib/$arch/cmake/absl /usr/lib/$arch/cmake/GTest)
    script="for d in ${hide[*]}; do [ -d \$d ] && mount -t tmpfs lowbit-hidden \$d; done; exec \"\$@\""
    LOWBIT_GPU_CHECK_HIDDEN=1 exec unshare --mount sh -c "$script" sh "$0" --dry-run
  fi
  # shellcheck source=scripts/common.sh
  source "$root/scripts/common.sh"
  lowbit_install_packages
  lowbit_use_torch2
  python=${LOWBIT_GPU_PYTHON:-$LOWBIT_PYTHON}
  say "dry run: Debian's LibTorch, Abseil and GoogleTest hidden: $([ -n "${LOWBIT_GPU_CHECK_HIDDEN:-}" ] && echo yes || echo 'no (not root)')"
else
  python=${LOWBIT_GPU_PYTHON:-python3}
fi

# cmake and ninja from the carried wheels (zip files; the bits lose their modes).
tools=$root/build-gpu/tools
if [ ! -x "$tools/cmake/data/bin/cmake" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  for w in "$deps"/wheels/*.whl; do "$python" -m zipfile -e "$w" "$tools"; done
  chmod +x "$tools"/cmake/data/bin/* "$tools"/ninja-*.data/scripts/ninja
fi
ninja_dir=$(dirname "$(ls "$tools"/ninja-*.data/scripts/ninja)")
export PATH=$tools/cmake/data/bin:$ninja_dir:$PATH

{
  echo "host: $(uname -n), $(nproc) cores"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  else
    echo "nvidia-smi: none"
  fi
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())'
  command -v nvcc >/dev/null && nvcc --version | tail -n 1 || ls /usr/local/cuda/bin/nvcc
  echo "cmake $(cmake --version | head -n 1 | awk '{print $3}'), ninja $(ninja --version)"
} 2>&1 | tee -a "$log"
torch_root=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')

build=$root/build-gpu/build
gdeps=$deps/root/usr/lib/$arch
export LD_LIBRARY_PATH=$gdeps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
targets=(kernels_cuda_twin_test gpu_cuda_ops_test cuda_kernel_bench)
say "configuring against $torch_root"
if ! timeout 180 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_root;$deps/root/usr" -Dabsl_DIR="$gdeps/cmake/absl" -DGTest_DIR="$gdeps/cmake/GTest" \
    -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_USE_CCACHE=OFF \
    >"$out/configure.log" 2>&1; then
  tail -n 40 "$out/configure.log" | tee -a "$log"
  say "configure FAILED"
  exit 1
fi
grep -A 12 'lowbit .* configuration' "$out/configure.log" | sed 's/^-- //' | tee -a "$log"
say "building ${targets[*]}"
if ! timeout 330 ninja -C "$build" -j "$(nproc)" "${targets[@]}" >"$out/build.log" 2>&1; then
  grep -E -A 8 'error|FAILED' "$out/build.log" | head -n 80 | tee -a "$log"
  say "build FAILED (or past 330 s)"
  exit 1
fi
say "built in $(($(date +%s) - start)) s"

run_step() {  # name timeout_s command...
  local name=$1 limit=$2 rc=0
  shift 2
  say "running $name"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
  grep -E '^\[  (PASSED|FAILED)  \]|^\[  SKIPPED \] [0-9]+ test|Failure|error' "$out/$name.log" | head -n 60 | tee -a "$log" || true
  status+=("\"$name\":$rc")
  say "$name: exit $rc"
}
run_step kernels_cuda_twin_test 120 "$build/tests/kernels/kernels_cuda_twin_test"
run_step gpu_cuda_ops_test 180 "$build/tests/gpu/gpu_cuda_ops_test"
run_step cuda_kernel_bench 120 "$build/bench/cuda_kernel_bench"
grep '^{' "$out/cuda_kernel_bench.log" >"$out/bench.jsonl" || true
cat "$out/bench.jsonl" | tee -a "$log"
elapsed=$(($(date +%s) - start))
echo "{\"gpu_check\":\"$mode\",\"seconds\":$elapsed,$(IFS=,; echo "${status[*]}")}" | tee "$out/summary.json" | tee -a "$log"
for s in "${status[@]}"; do [ "${s##*:}" = 0 ] || exit 1; done
