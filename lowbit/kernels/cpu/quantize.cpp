#include "lowbit/kernels/cpu/quantize.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "lowbit/kernels/internal/quantize_math.h"

namespace lowbit::kernels::cpu {
namespace {
// Groups of 8 elements handled per parallel_for grain.
constexpr int64_t kGrainGroups = int64_t{1} << 12;
}  // namespace

void BlockAbsMax(const float* x, int64_t n, int64_t block, float* scales) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, (int64_t{1} << 15) / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t end = std::min(n, (b + 1) * block);
      float m = 0.0f;
      bool nan = false;
      for (int64_t i = b * block; i < end; ++i) {
        const float a = std::fabs(x[i]);
        m = a > m ? a : m;
        nan |= std::isnan(x[i]);
      }
      scales[b] = nan ? NAN : m;
    }
  });
}

void QuantizeBlockwise(const float* x, int64_t n, int64_t block, const float* scales, int bits, int levels,
                       bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes) {
  const int64_t groups = (n + 7) / 8;
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      internal::QuantizeGroup(x, n, g, block, scales, bits, levels, stochastic, key, index_base, codes);
    }
  });
}

void DequantizeBlockwise(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits,
                         int levels, float* out, bool accumulate) {
  const int64_t groups = (n + 7) / 8;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  at::parallel_for(0, groups, kGrainGroups, [&](int64_t g0, int64_t g1) {
    int64_t b = (8 * g0) / block;
    int64_t next_block = (b + 1) * block;
    float s = scales[b];
    float step = internal::StepOf(s, levels);
    for (int64_t g = g0; g < g1; ++g) {
      const uint64_t word = internal::LoadGroup(codes + g * bits, bits);
      const int lim = static_cast<int>(std::min<int64_t>(8, n - 8 * g));
      for (int k = 0; k < lim; ++k) {
        const int64_t i = 8 * g + k;
        if (i == next_block) {
          ++b;
          next_block += block;
          s = scales[b];
          step = internal::StepOf(s, levels);
        }
        const float v = internal::DequantizeOne(static_cast<uint32_t>((word >> (k * bits)) & mask), step, s);
        out[i] = accumulate ? out[i] + v : v;
      }
    }
  });
}

}  // namespace lowbit::kernels::cpu
