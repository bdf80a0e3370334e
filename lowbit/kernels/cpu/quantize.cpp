#include "lowbit/kernels/cpu/quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "lowbit/kernels/cpu/internal/compress_avx2.h"
#include "lowbit/kernels/internal/quantize_math.h"

namespace lowbit::kernels::cpu {
namespace {

// Blocks per parallel_for grain: about 32 KiB of input.
int64_t BlockGrain(int64_t block) { return std::max<int64_t>(1, (int64_t{1} << 13) / block); }

float AbsMaxOf(const float* x, int64_t len) {
  if (internal::HaveAvx2()) return internal::AbsMaxAvx2(x, len);
  float m = 0.0f;
  bool nan = false;
  for (int64_t i = 0; i < len; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;
    nan |= std::isnan(x[i]);
  }
  return nan ? NAN : m;
}

// Codes of block b, whose scale is scales[b]. The SIMD loop takes whole runs
// of 32 elements where blocks are whole runs of 32 (the default 256 is) and
// codes are 4 or 8 bits; the shared group loop takes the rest.
void QuantizeBlock(const float* x, int64_t n, int64_t block, const float* scales, int bits, int levels,
                   bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes, int64_t b) {
  const int64_t begin = b * block;
  const int64_t end = std::min(n, begin + block);
  int64_t done = begin;
  if (internal::HaveAvx2() && block % 32 == 0 && (bits == 4 || bits == 8)) {
    const int64_t len = (end - begin) / 32 * 32;
    internal::QuantizeRunAvx2(x, begin, len, scales[b], bits, levels, stochastic, key, index_base, codes);
    done = begin + len;
  }
  if (block % 8 == 0) {
    for (int64_t g = done / 8; g < (end + 7) / 8; ++g) {
      kernels::internal::QuantizeGroup(x, n, g, block, scales, bits, levels, stochastic, key, index_base, codes);
    }
  }
}

}  // namespace

void BlockAbsMax(const float* x, int64_t n, int64_t block, float* scales) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) scales[b] = AbsMaxOf(x + b * block, std::min(n, (b + 1) * block) - b * block);
  });
}

void QuantizeBlockwise(const float* x, int64_t n, int64_t block, const float* scales, int bits, int levels,
                       bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes) {
  if (block % 8 != 0) {
    // Groups of 8 straddle blocks: the group loop over all of them.
    const int64_t groups = (n + 7) / 8;
    at::parallel_for(0, groups, int64_t{1} << 12, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        kernels::internal::QuantizeGroup(x, n, g, block, scales, bits, levels, stochastic, key, index_base, codes);
      }
    });
    return;
  }
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      QuantizeBlock(x, n, block, scales, bits, levels, stochastic, key, index_base, codes, b);
    }
  });
}

void AbsMaxQuantizeBlockwise(const float* x, int64_t n, int64_t block, int bits, int levels, bool stochastic,
                             uint64_t key, int64_t index_base, float* scales, uint8_t* codes) {
  if (block % 8 != 0) {
    BlockAbsMax(x, n, block, scales);
    QuantizeBlockwise(x, n, block, scales, bits, levels, stochastic, key, index_base, codes);
    return;
  }
  // One pass: each block is read from memory once, then again from L1.
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      scales[b] = AbsMaxOf(x + b * block, std::min(n, (b + 1) * block) - b * block);
      QuantizeBlock(x, n, block, scales, bits, levels, stochastic, key, index_base, codes, b);
    }
  });
}

namespace {

// Decodes block b into out: mode 0 writes v, 1 adds it, 2 subtracts it.
void DecodeBlock(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits, int levels,
                 float* out, int mode, int64_t b) {
  const int64_t begin = b * block;
  const int64_t end = std::min(n, begin + block);
  int64_t done = begin;
  if (internal::HaveAvx2() && block % 16 == 0 && (bits == 4 || bits == 8)) {
    const int64_t len = (end - begin) / 16 * 16;
    internal::DequantizeRunAvx2(codes, begin, len, scales[b], bits, levels, out, mode);
    done = begin + len;
  }
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  const float s = scales[b];
  const float step = kernels::internal::StepOf(s, levels);
  for (int64_t i = done; i < end; ++i) {
    const uint64_t word = kernels::internal::LoadGroup(codes + (i / 8) * bits, bits);
    const float v = kernels::internal::DequantizeOne(static_cast<uint32_t>((word >> ((i % 8) * bits)) & mask), step, s);
    out[i] = mode == 0 ? v : mode == 1 ? out[i] + v : out[i] - v;
  }
}

}  // namespace

void DequantizeBlockwise(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits,
                         int levels, float* out, bool accumulate) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) DecodeBlock(codes, scales, n, block, bits, levels, out, accumulate ? 1 : 0, b);
  });
}

void QuantizeWithFeedback(const float* g, const float* e, float* x, int64_t n, int64_t block, int bits, int levels,
                          bool stochastic, uint64_t key, int64_t index_base, float* scales, uint8_t* codes) {
  auto add = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] = e != nullptr ? g[i] + e[i] : g[i];
  };
  const int64_t nblocks = (n + block - 1) / block;
  if (block % 8 != 0) {
    // Groups straddle blocks: the same arithmetic in separate passes.
    at::parallel_for(0, n, int64_t{1} << 15, add);
    AbsMaxQuantizeBlockwise(x, n, block, bits, levels, stochastic, key, index_base, scales, codes);
    at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) DecodeBlock(codes, scales, n, block, bits, levels, x, 2, b);
    });
    return;
  }
  // One pass over g and e: each block of x = g + e is quantized and turned
  // into its residual x - decode while it is in L1.
  at::parallel_for(0, nblocks, BlockGrain(block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      const int64_t end = std::min(n, begin + block);
      if (internal::HaveAvx2()) {
        scales[b] = internal::AddAbsMaxAvx2(g + begin, e != nullptr ? e + begin : nullptr, x + begin, end - begin);
      } else {
        add(begin, end);
        scales[b] = AbsMaxOf(x + begin, end - begin);
      }
      QuantizeBlock(x, n, block, scales, bits, levels, stochastic, key, index_base, codes, b);
      DecodeBlock(codes, scales, n, block, bits, levels, x, 2, b);
    }
  });
}

}  // namespace lowbit::kernels::cpu
