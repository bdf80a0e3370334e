#include "lowbit/kernels/cpu/sign.h"

#include <ATen/Parallel.h>

#include <algorithm>

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
  // Whole blocks (block is a multiple of 8, so of whole bytes) per task; the
  // inner loop is branch-free so GCC vectorises it.
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float scale = scales[b];
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      const int64_t full_end = begin + (end - begin) / 8 * 8;
      for (int64_t base = begin; base < full_end; base += 8) {
        const uint32_t byte = bits[base / 8];
        float* o = out + base;
        if (accumulate) {
          for (int k = 0; k < 8; ++k) o[k] += static_cast<float>(static_cast<int>((byte >> k) & 1u) * 2 - 1) * scale;
        } else {
          for (int k = 0; k < 8; ++k) o[k] = static_cast<float>(static_cast<int>((byte >> k) & 1u) * 2 - 1) * scale;
        }
      }
      for (int64_t i = full_end; i < end; ++i) {
        const float v = ((bits[i / 8] >> (i % 8)) & 1) ? scale : -scale;
        out[i] = accumulate ? out[i] + v : v;
      }
    }
  });
}

}  // namespace lowbit::kernels::cpu
