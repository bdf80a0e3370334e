#!/usr/bin/env bash
# fashion_peer_test.sh FASHION_MNIST PYTHON PEER DIR: the example's CNN and the
# PyTorch peer of bench/peers are the same model: the same parameter names and
# shapes, the same normalised images and labels, and the same loss from the
# same weights on the same batch.
set -euo pipefail
example=$1 python=$2 peer=$3 dir=$4
rm -rf "$dir" && mkdir -p "$dir"
"$example" --peer_check_dir "$dir"
"$python" "$peer" --check "$dir"
