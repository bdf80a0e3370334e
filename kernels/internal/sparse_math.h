// Per-group arithmetic of N:M sparsity, shared by the CPU kernels and their
// CUDA twins (kernels/cpu/sparse.h, kernels/cuda/sparse.cuh).
#pragma once
#include <cstdint>

#include "lowbit/kernels/internal/host_device.h"

namespace lowbit::kernels {

// The magnitude N:M selection ranks by: |x|, with NaN above everything, so a
// diverged weight is kept (and seen) rather than silently dropped.
LOWBIT_HOST_DEVICE float NmKey(float x) {
  const float a = x < 0.0f ? -x : x;
  return a == a ? a : BitsFloat(0x7F800000u);  // NaN -> +inf
}

// Whether element j of a group of m keeps its value under N:M: fewer than n
// elements of the group rank above it (a larger key, or an equal key at a
// lower position). Exactly n elements of every group are kept, the largest
// magnitudes, ties to the lower position.
LOWBIT_HOST_DEVICE bool NmKeeps(const float* group, int m, int n, int j) {
  const float kj = NmKey(group[j]);
  int above = 0;
  for (int k = 0; k < m; ++k) {
    const float kk = NmKey(group[k]);
    above += (kk > kj || (kk == kj && k < j)) ? 1 : 0;
  }
  return above < n;
}

}  // namespace lowbit::kernels
