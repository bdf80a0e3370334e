#!/usr/bin/env bash
# gpt_peer_test.sh DUMP PYTHON PEER CORPUS PRESET DIR: lowbit's GPT and the
# PyTorch peer of bench/peers (what scripts/bench.sh peers compares against)
# must be the same model: the same parameter names, shapes and count, the same
# training windows, and the same loss from the same weights on the same batch.
set -euo pipefail
dump=$1 python=$2 peer=$3 corpus=$4 preset=$5 dir=$6
rm -rf "$dir" && mkdir -p "$dir"
"$dump" "$corpus" "$preset" "$dir"
"$python" "$peer" --check "$dir" --corpus "$corpus"
