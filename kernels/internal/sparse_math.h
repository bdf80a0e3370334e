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

// Whether the element at position k with key kk ranks above the one at j
// with key kj: a larger key, or an equal key at a lower position.
LOWBIT_HOST_DEVICE bool NmAbove(float kk, int k, float kj, int j) {
  return (kk > kj) | ((kk == kj) & (k < j));  // bitwise: no branches to mispredict
}

// Whether element j of a group of m keeps its value under N:M: fewer than n
// elements of the group rank above it. Exactly n elements of every group are
// kept, the largest magnitudes, ties to the lower position.
LOWBIT_HOST_DEVICE bool NmKeeps(const float* group, int m, int n, int j) {
  const float kj = NmKey(group[j]);
  int above = 0;
  for (int k = 0; k < m; ++k) above += NmAbove(NmKey(group[k]), k, kj, j) ? 1 : 0;
  return above < n;
}

// NmKeeps for a whole group at once (keys computed once), m <= kMaxM; with
// a compile-time kMaxM == m the loops unroll (2:4, 4:8).
template <int kMaxM>
LOWBIT_HOST_DEVICE void NmKeepGroup(const float* group, int m, int n, uint8_t* keep) {
  float keys[kMaxM];
  for (int j = 0; j < m; ++j) keys[j] = NmKey(group[j]);
  for (int j = 0; j < m; ++j) {
    int above = 0;
    for (int k = 0; k < m; ++k) above += NmAbove(keys[k], k, keys[j], j) ? 1 : 0;
    keep[j] = above < n ? 1 : 0;
  }
}

}  // namespace lowbit::kernels
