#!/usr/bin/env bash
# The main demo: installs what is missing, builds, and trains the Fashion-MNIST
# CNN on 4 local MPI ranks for 3 epochs with PowerSGD rank-4 gradient
# compression (18x fewer bytes, accuracy within 0.2 points of uncompressed).
# Extra arguments go to the example and win over these, e.g.
#   ./scripts/demo.sh --hook onebit --optimizer sgd --lr 0.05
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ "${1:-}" = --torch2 ]; then  # against LibTorch 2.x (scripts/common.sh)
  LOWBIT_TORCH=2
  shift
fi
lowbit_setup
ranks=${LOWBIT_RANKS:-4}
exec "${LOWBIT_MPIRUN[@]}" -np "$ranks" "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 3 --hook powersgd "$@"
