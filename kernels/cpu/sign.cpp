#include "lowbit/kernels/cpu/sign.h"

#include <ATen/Parallel.h>

namespace lowbit::kernels::cpu {
namespace {
constexpr int64_t kGrainBytes = int64_t{1} << 14;
}  // namespace

void PackSigns(const float* x, int64_t n, uint8_t* bits) {
  const int64_t full = n / 8;
  at::parallel_for(0, full, kGrainBytes, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const float* v = x + 8 * j;
      uint8_t b = 0;
      for (int k = 0; k < 8; ++k) b |= static_cast<uint8_t>(v[k] >= 0.0f) << k;
      bits[j] = b;
    }
  });
  if (full * 8 < n) {
    uint8_t b = 0;
    for (int64_t i = full * 8; i < n; ++i) b |= static_cast<uint8_t>(x[i] >= 0.0f) << (i - full * 8);
    bits[full] = b;
  }
}

void UnpackSigns(const uint8_t* bits, int64_t n, const float* scales, int64_t block, float* out, bool accumulate) {
  const int64_t nbytes = (n + 7) / 8;
  at::parallel_for(0, nbytes, kGrainBytes, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t base = 8 * j;
      const int lim = static_cast<int>(n - base < 8 ? n - base : 8);
      const uint8_t b = bits[j];
      const float scale = scales[base / block];
      float* o = out + base;
      if (lim == 8) {
        if (accumulate) {
          for (int k = 0; k < 8; ++k) o[k] += ((b >> k) & 1) ? scale : -scale;
        } else {
          for (int k = 0; k < 8; ++k) o[k] = ((b >> k) & 1) ? scale : -scale;
        }
      } else {
        for (int k = 0; k < lim; ++k) {
          const float v = ((b >> k) & 1) ? scale : -scale;
          o[k] = accumulate ? o[k] + v : v;
        }
      }
    }
  });
}

double SumSquares(const float* x, int64_t n) {
  // Fixed 4K-element chunks summed in order, so the result does not depend on
  // the number of threads.
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
    // Eight lanes so GCC vectorises without reassociating a single sum.
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = c * kChunk;
    for (; i + 8 <= end; i += 8) {
      for (int k = 0; k < 8; ++k) lanes[k] += x[i + k] * x[i + k];
    }
    for (; i < end; ++i) lanes[0] += x[i] * x[i];
    for (int k = 0; k < 8; ++k) total += lanes[k];
  }
  return total;
}

}  // namespace lowbit::kernels::cpu
