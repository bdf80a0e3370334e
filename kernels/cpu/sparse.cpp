#include "lowbit/kernels/cpu/sparse.h"

#include <ATen/Parallel.h>

#include <atomic>

#include "lowbit/kernels/internal/sparse_math.h"

namespace lowbit::kernels::cpu {

namespace {
constexpr int64_t kGrainGroups = 4096;
}  // namespace

namespace {
template <int kM>
void NmMaskFixed(const float* w, int64_t groups, int n, uint8_t* mask) {
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) NmKeepGroup<kM>(w + g * kM, kM, n, mask + g * kM);
  });
}
}  // namespace

void NmMask(const float* w, int64_t groups, int m, int n, uint8_t* mask) {
  if (m == 4) return NmMaskFixed<4>(w, groups, n, mask);
  if (m == 8) return NmMaskFixed<8>(w, groups, n, mask);
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
