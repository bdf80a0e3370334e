#include "lowbit/kernels/cpu/sign.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowbit/kernels/cpu/internal/compress_avx2.h"

namespace lowbit::kernels::cpu {
namespace {
constexpr int64_t kGrainBytes = int64_t{1} << 12;

// Sign bytes [j0, j1) (whole bytes: elements 8 j0 .. 8 j1 - 1).
void PackBytes(const float* x, int64_t j0, int64_t j1, uint8_t* bits) {
  if (internal::HaveAvx2()) return internal::PackSignsAvx2(x + 8 * j0, j1 - j0, bits + j0);
  for (int64_t j = j0; j < j1; ++j) {
    const float* v = x + 8 * j;
    uint8_t b = 0;
    for (int k = 0; k < 8; ++k) b |= static_cast<uint8_t>(v[k] >= 0.0f) << k;
    bits[j] = b;
  }
}

// The last, partial byte of n elements (n % 8 != 0).
void PackTail(const float* x, int64_t n, uint8_t* bits) {
  const int64_t full = n / 8;
  uint8_t b = 0;
  for (int64_t i = full * 8; i < n; ++i) b |= static_cast<uint8_t>(x[i] >= 0.0f) << (i - full * 8);
  bits[full] = b;
}

float ScaleOf(const float* x, int64_t len, int p) {
  float lanes[8];
  if (internal::HaveAvx2()) {
    internal::LaneSumsAvx2(x, len, p, lanes);
  } else {
    internal::LaneSums(x, len, p, lanes);
  }
  const float mean = internal::ReduceLanes(lanes) / static_cast<float>(len);
  return p == 1 ? mean : std::sqrt(mean);
}

}  // namespace

void PackSigns(const float* x, int64_t n, uint8_t* bits) {
  at::parallel_for(0, n / 8, kGrainBytes, [&](int64_t j0, int64_t j1) { PackBytes(x, j0, j1, bits); });
  if (n % 8 != 0) PackTail(x, n, bits);
}

void BlockScales(const float* x, int64_t n, int64_t block, int p, float* scales) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) scales[b] = ScaleOf(x + b * block, std::min(n, (b + 1) * block) - b * block, p);
  });
}

void PackSignsWithScales(const float* x, int64_t n, int64_t block, int p, float* scales, uint8_t* bits) {
  // One pass: each block's scale, then its signs while it is in L1.
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      scales[b] = ScaleOf(x + begin, end - begin, p);
      PackBytes(x, begin / 8, end / 8, bits);
    }
  });
  if (n % 8 != 0) PackTail(x, n, bits);
}

void PackSignsWithFeedback(const float* g, const float* e, float* x, int64_t n, int64_t block, int p, float* scales,
                           uint8_t* bits) {
  const int64_t nblocks = (n + block - 1) / block;
  const bool simd = internal::HaveAvx2();
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      const int64_t len = end - begin;
      float lanes[8];
      if (simd) {
        internal::AddLaneSumsAvx2(g + begin, e != nullptr ? e + begin : nullptr, x + begin, len, p, lanes);
      } else {
        for (int64_t i = begin; i < end; ++i) x[i] = e != nullptr ? g[i] + e[i] : g[i];
        internal::LaneSums(x + begin, len, p, lanes);
      }
      const float mean = internal::ReduceLanes(lanes) / static_cast<float>(len);
      const float s = p == 1 ? mean : std::sqrt(mean);
      scales[b] = s;
      const int64_t full_end = begin + len / 8 * 8;
      if (simd) {
        internal::PackSignsResidualAvx2(x + begin, (full_end - begin) / 8, s, bits + begin / 8);
      } else {
        for (int64_t j = begin / 8; j < full_end / 8; ++j) {
          uint8_t byte = 0;
          for (int k = 0; k < 8; ++k) {
            const bool set = x[8 * j + k] >= 0.0f;
            byte |= static_cast<uint8_t>(set) << k;
            x[8 * j + k] -= set ? s : -s;
          }
          bits[j] = byte;
        }
      }
      if (full_end < end) {  // the last, partial byte
        uint8_t byte = 0;
        for (int64_t i = full_end; i < end; ++i) {
          const bool set = x[i] >= 0.0f;
          byte |= static_cast<uint8_t>(set) << (i - full_end);
          x[i] -= set ? s : -s;
        }
        bits[full_end / 8] = byte;
      }
    }
  });
}

void UnpackSignsSum(const uint8_t* const* bits, const float* const* scales, int count, int64_t n, int64_t block,
                    float divisor, float* out) {
  const int64_t nblocks = (n + block - 1) / block;
  const bool simd = internal::HaveAvx2();
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    std::vector<float> s(static_cast<size_t>(count));
    std::vector<const uint8_t*> rows(static_cast<size_t>(count));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      const int64_t full_end = begin + (end - begin) / 8 * 8;
      for (int r = 0; r < count; ++r) {
        s[r] = scales[r][b];
        rows[r] = bits[r] + begin / 8;
      }
      int64_t i = begin;
      if (simd) {
        internal::UnpackSignsSumAvx2(rows.data(), s.data(), count, (full_end - begin) / 8, divisor, out + begin);
        i = full_end;
      }
      for (; i < end; ++i) {
        float acc = 0.0f;
        for (int r = 0; r < count; ++r) {
          const float v = ((bits[r][i / 8] >> (i % 8)) & 1) ? s[r] : -s[r];
          acc = r == 0 ? v : acc + v;
        }
        out[i] = divisor == 1.0f ? acc : acc / divisor;
      }
    }
  });
}

void UnpackSigns(const uint8_t* bits, int64_t n, const float* scales, int64_t block, float* out, bool accumulate) {
  // Whole blocks (block is a multiple of 8, so of whole bytes) per task.
  const int64_t nblocks = (n + block - 1) / block;
  const bool simd = internal::HaveAvx2();
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrainBytes * 8 / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float scale = scales[b];
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      const int64_t full_end = begin + (end - begin) / 8 * 8;
      if (simd) {
        internal::UnpackSignsAvx2(bits + begin / 8, (full_end - begin) / 8, scale, out + begin, accumulate);
      } else {
        for (int64_t base = begin; base < full_end; base += 8) {
          const uint32_t byte = bits[base / 8];
          float* o = out + base;
          if (accumulate) {
            for (int k = 0; k < 8; ++k) o[k] += static_cast<float>(static_cast<int>((byte >> k) & 1u) * 2 - 1) * scale;
          } else {
            for (int k = 0; k < 8; ++k) o[k] = static_cast<float>(static_cast<int>((byte >> k) & 1u) * 2 - 1) * scale;
          }
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
