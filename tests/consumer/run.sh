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
cmake -S "$work/project" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  $(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache) >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { grep -E -A5 'error|FAILED' "$work/build.log" | head -60; exit 1; }
"$@" -np 2 "$work/build/consumer" "$work/ckpt"
