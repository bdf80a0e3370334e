// Per-group arithmetic of N:M sparsity, shared by the CPU kernels and their
// CUDA twins (kernels/cpu/sparse.h, kernels/cuda/sparse.cuh).
#pragma once
#include <cstdint>

#include "lowbit/kernels/host_device.h"

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

// One group of the compressed form: the positions with mask 1, in order,
// into values/index (n slots; padded with 0 when fewer). False unless the
// mask holds exactly n ones.
LOWBIT_HOST_DEVICE bool NmCompressGroup(const float* w, const uint8_t* mask, int m, int n, float* values,
                                        uint8_t* index) {
  int t = 0;
  for (int j = 0; j < m; ++j) {
    if (mask[j] == 0) continue;
    if (t < n) {
      values[t] = w[j];
      index[t] = static_cast<uint8_t>(j);
    }
    ++t;
  }
  for (int r = t; r < n; ++r) {
    values[r] = 0.0f;
    index[r] = 0;
  }
  return t == n;
}

// The inverse for one group: zeros, then the values at their positions.
// False on a position >= m or positions that do not increase (those are
// skipped).
LOWBIT_HOST_DEVICE bool NmDecompressGroup(const float* values, const uint8_t* index, int m, int n, float* out) {
  for (int j = 0; j < m; ++j) out[j] = 0.0f;
  int last = -1;
  bool ok = true;
  for (int t = 0; t < n; ++t) {
    const int j = index[t];
    if (j >= m || j <= last) {
      ok = false;
      continue;
    }
    out[j] = values[t];
    last = j;
  }
  return ok;
}

}  // namespace lowbit::kernels
