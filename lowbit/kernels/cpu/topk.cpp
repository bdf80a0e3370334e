#include "lowbit/kernels/cpu/topk.h"

#include <cmath>

#include "lowbit/kernels/cpu/internal/compress_avx2.h"
#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::kernels::cpu {

int64_t CountAtLeast(const float* x, int64_t n, float threshold) {
  if (internal::HaveAvx2()) return internal::CountAtLeastAvx2(x, n, threshold);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += std::fabs(x[i]) >= threshold;
  return count;
}

int64_t GatherAtLeast(const float* x, int64_t n, float threshold, int64_t cap, int32_t* idx, float* val) {
  if (internal::HaveAvx2()) return internal::GatherAtLeastAvx2(x, n, threshold, cap, idx, val);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(x[i]) >= threshold) {
      if (count == cap) return -1;
      idx[count] = static_cast<int32_t>(i);
      val[count] = x[i];
      ++count;
    }
  }
  return count;
}

int64_t GatherSelected(const float* x, int64_t n, float threshold, int64_t max_ties, int32_t* idx, float* val) {
  if (max_ties < 0) return GatherAtLeast(x, n, threshold, n, idx, val);
  int64_t count = 0;
  int64_t ties = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    bool take = a > threshold;
    if (!take && a == threshold && (max_ties < 0 || ties < max_ties)) {
      take = true;
      ++ties;
    }
    if (take) {
      idx[count] = static_cast<int32_t>(i);
      val[count] = x[i];
      ++count;
    }
  }
  return count;
}

int64_t RandomSubset(uint64_t key, int64_t n, float density, int32_t* idx) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (Uniform(key, i) < density) idx[count++] = static_cast<int32_t>(i);
  }
  return count;
}

void ScatterAdd(const int32_t* idx, const float* val, int64_t k, float* out) {
  for (int64_t i = 0; i < k; ++i) out[idx[i]] += val[i];
}

}  // namespace lowbit::kernels::cpu
