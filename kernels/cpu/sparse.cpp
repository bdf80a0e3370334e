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
      int t = 0;
      for (int j = 0; j < m; ++j) {
        if (mask[g * m + j] == 0) continue;
        if (t < n) {
          values[g * n + t] = w[g * m + j];
          index[g * n + t] = static_cast<uint8_t>(j);
        }
        ++t;
      }
      for (int r = t; r < n; ++r) {  // fewer than n: pad so the output is defined
        values[g * n + r] = 0.0f;
        index[g * n + r] = 0;
      }
      local_bad += t != n ? 1 : 0;
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
      float* o = out + g * m;
      for (int j = 0; j < m; ++j) o[j] = 0.0f;
      int last = -1;
      bool ok = true;
      for (int t = 0; t < n; ++t) {
        const int j = index[g * n + t];
        if (j >= m || j <= last) {
          ok = false;
          continue;
        }
        o[j] = values[g * n + t];
        last = j;
      }
      local_bad += ok ? 0 : 1;
    }
    bad += local_bad;
  });
  return bad.load();
}

}  // namespace lowbit::kernels::cpu
