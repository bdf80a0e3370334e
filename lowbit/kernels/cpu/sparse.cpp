#include "lowbit/kernels/cpu/sparse.h"

#include <ATen/Parallel.h>

#include <atomic>

#include "lowbit/kernels/internal/sparse_math.h"

namespace lowbit::kernels::cpu {

namespace {

constexpr int64_t kGrainGroups = 4096;

// 4:8 four groups at once in GCC/Clang vector registers (SSE2 on x86-64,
// NEON on arm64), the group index across the lanes: 5.6x the one-group
// loop, which for 2:4 the compiler already vectorises better
// (bench/sparsity_bench). Each pair (j, k > j) is compared once: k ranks
// above j when its key is larger (on a tie j, the lower position, ranks
// above k), the order of NmAbove. above[j] starts at j (all lower positions
// ranking above it) and moves by one per pair that goes the other way.
using V4f = float __attribute__((vector_size(16)));
using V4i = int32_t __attribute__((vector_size(16)));

template <int kM>
void NmKeep4Groups(const float* w, int n, uint8_t* mask) {
  V4f keys[kM];
  V4i above[kM];
  const V4i inf = V4i{} + 0x7F800000;
  for (int j = 0; j < kM; ++j) {
    const V4f x = {w[j], w[kM + j], w[2 * kM + j], w[3 * kM + j]};
    // A cast between vector types of one size reinterprets the bits.
    const V4i a = (V4i)x & 0x7FFFFFFF;  // |x|
    const V4i number = (V4f)a == (V4f)a;
    keys[j] = (V4f)((a & number) | (inf & ~number));  // NmKey: NaN -> +inf
    above[j] = V4i{} + j;
  }
  for (int j = 0; j < kM; ++j) {
    for (int k = j + 1; k < kM; ++k) {
      const V4i k_above = keys[k] > keys[j];  // -1 or 0 per lane
      above[j] -= k_above;
      above[k] += k_above;
    }
  }
  for (int j = 0; j < kM; ++j) {
    const V4i keep = above[j] < n;
    for (int l = 0; l < 4; ++l) mask[l * kM + j] = static_cast<uint8_t>(keep[l] & 1);
  }
}

template <int kM>
void NmMaskFixed(const float* w, int64_t groups, int n, uint8_t* mask) {
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) NmKeepGroup<kM>(w + g * kM, kM, n, mask + g * kM);
  });
}

// Not inlined into NmMask: there, GCC 12 then compiled the 2:4 loop 1.7x
// slower.
__attribute__((noinline)) void NmMask4Of8Groups(const float* w, int64_t groups, int n, uint8_t* mask) {
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    int64_t g = g0;
    for (; g + 4 <= g1; g += 4) NmKeep4Groups<8>(w + g * 8, n, mask + g * 8);
    for (; g < g1; ++g) NmKeepGroup<8>(w + g * 8, 8, n, mask + g * 8);
  });
}
}  // namespace

void NmMask(const float* w, int64_t groups, int m, int n, uint8_t* mask) {
  if (m == 4) return NmMaskFixed<4>(w, groups, n, mask);
  if (m == 8) return NmMask4Of8Groups(w, groups, n, mask);
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) NmKeepGroup<128>(w + g * m, m, n, mask + g * m);
  });
}

int64_t NmCompress(const float* w, const uint8_t* mask, int64_t groups, int m, int n, float* values,
                   uint8_t* index) {
  std::atomic<int64_t> bad{0};
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    int64_t local_bad = 0;
    for (int64_t g = g0; g < g1; ++g) {
      local_bad += NmCompressGroup(w + g * m, mask + g * m, m, n, values + g * n, index + g * n) ? 0 : 1;
    }
    bad += local_bad;
  });
  return bad.load();
}

int64_t NmDecompress(const float* values, const uint8_t* index, int64_t groups, int m, int n, float* out) {
  std::atomic<int64_t> bad{0};
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    int64_t local_bad = 0;
    for (int64_t g = g0; g < g1; ++g) {
      local_bad += NmDecompressGroup(values + g * n, index + g * n, m, n, out + g * m) ? 0 : 1;
    }
    bad += local_bad;
  });
  return bad.load();
}

}  // namespace lowbit::kernels::cpu
