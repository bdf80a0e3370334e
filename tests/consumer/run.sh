#!/usr/bin/env bash
# run.sh SOURCE_DIR BUILD_DIR WORK_DIR MPIEXEC...: installs lowbit from
# BUILD_DIR into WORK_DIR/prefix, checks that every public header of the
# source tree (lowbit/<folder>/*.h) was installed, then configures a project
# that sees only the install (find_package(lowbit)), compiles one translation
# unit that includes every installed header, and runs a small training
# program under MPIEXEC -np 2.
set -euo pipefail
src=$1; build=$2; work=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"; mkdir -p "$work/project"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
inc="$work/prefix/include"
missing=0
for h in "$src"/lowbit/*/*.h; do
  rel=${h#"$src"/}
  if [ ! -f "$inc/$rel" ]; then echo "consumer: public header $rel was not installed"; missing=1; fi
done
[ "$missing" -eq 0 ] || exit 1
# The project: main.cpp plus one file including every installed header.
cp "$here/CMakeLists.txt" "$here/main.cpp" "$work/project/"
(cd "$inc" && find lowbit -name '*.h' | sort | sed 's/.*/#include <&>/') >"$work/project/all_headers.cpp"
echo "consumer: $(wc -l <"$work/project/all_headers.cpp") installed headers in all_headers.cpp"
launcher=$(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache || true)
# A CPU-only consumer must not need the CUDA toolkit, even when lowbit's own
# build found nvcc: configure and build with it hidden. As root, a private
# mount namespace lays an empty /usr/local over the real one (nvcc, its
# headers and libraries, and the links to them live there); otherwise CMake
# is told not to find CUDAToolkit, which an unconditional
# find_dependency(CUDAToolkit) turns into an error.
# A lowbit built against a CUDA LibTorch (PyPI's wheels) is not CPU-only:
# LibTorch's own package then needs the toolkit, so it stays in view.
config=$(compgen -G "$work/prefix/lib*/cmake/lowbit/lowbitConfig.cmake" | head -n 1)
if grep -q '^set(_lowbit_links_cuda ON)' "$config"; then
  hide=()
  hidden="none: lowbit links a CUDA LibTorch, whose package needs the CUDA toolkit"
  no_cuda=()
elif [ "$(id -u)" -eq 0 ] && unshare --mount true 2>/dev/null; then
  hide=(unshare --mount sh -c 'mount -t tmpfs lowbit-no-cuda /usr/local && ! command -v nvcc >/dev/null && exec "$@"' sh)
  hidden="an empty /usr/local"
  no_cuda=()
else
  hide=()
  hidden="CMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit"
  no_cuda=(-DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=TRUE)
fi
"${hide[@]}" cmake -S "$work/project" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" $launcher \
  "${no_cuda[@]}" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
"${hide[@]}" cmake --build "$work/build" >"$work/build.log" 2>&1 \
  || { grep -E -A5 'error|FAILED' "$work/build.log" | head -60; exit 1; }
grep -o 'consumer: LibTorch .*' "$work/configure.log"
echo "consumer: configured and built; CUDA toolkit hidden: $hidden"
# With the toolkit in view, COMPONENTS cuda gives lowbit::cuda_kernels.
if compgen -G "$work/prefix/lib*/cmake/lowbit/lowbitCudaTargets.cmake" >/dev/null && command -v nvcc >/dev/null; then
  cmake -S "$work/project" -B "$work/build-cuda" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DLOWBIT_CONSUMER_CUDA=ON >"$work/configure-cuda.log" 2>&1 || { cat "$work/configure-cuda.log"; exit 1; }
  grep -q 'consumer: lowbit::cuda_kernels found' "$work/configure-cuda.log"
  echo "consumer: find_package(lowbit COMPONENTS cuda) gives lowbit::cuda_kernels"
fi
"$@" -np 2 "$work/build/consumer" "$work/ckpt"
