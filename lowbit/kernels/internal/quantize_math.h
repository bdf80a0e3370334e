// The per-element arithmetic of blockwise quantization, shared by the CPU and
// CUDA kernels so both round identically (the CUDA build disables FMA
// contraction for the same reason). See kernels/cpu/quantize.h.
#pragma once
#include <cstdint>

#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::kernels::internal {

LOWBIT_HOST_DEVICE uint32_t QuantizeOne(float x, float inv_scale, float half_levels, int levels, float u) {
  const float t = (x * inv_scale + 1.0f) * half_levels + u;
  // NaN and out-of-range values clamp (a NaN block is caught before encoding).
  if (!(t >= 1.0f)) return 0u;
  const uint32_t q = static_cast<uint32_t>(t);
  return q > static_cast<uint32_t>(levels) ? static_cast<uint32_t>(levels) : q;
}

LOWBIT_HOST_DEVICE float InvScale(float s) { return s > 0.0f ? 1.0f / s : 0.0f; }
LOWBIT_HOST_DEVICE float StepOf(float s, int levels) { return (2.0f * s) / static_cast<float>(levels); }
LOWBIT_HOST_DEVICE float DequantizeOne(uint32_t q, float step, float s) {
  return static_cast<float>(q) * step - s;
}

// Packs 8 codes of `bits` bits into `bits` bytes, little-endian.
LOWBIT_HOST_DEVICE void PackGroup(const uint32_t* q, int bits, uint8_t* out) {
  uint64_t word = 0;
  for (int k = 0; k < 8; ++k) word |= static_cast<uint64_t>(q[k]) << (k * bits);
  for (int b = 0; b < bits; ++b) out[b] = static_cast<uint8_t>(word >> (8 * b));
}

LOWBIT_HOST_DEVICE uint64_t LoadGroup(const uint8_t* in, int bits) {
  uint64_t word = 0;
  for (int b = 0; b < bits; ++b) word |= static_cast<uint64_t>(in[b]) << (8 * b);
  return word;
}

// Quantizes and packs group g (elements 8g .. 8g + 7) of x: the loop body of
// both the CPU kernel and the CUDA kernel (one thread per group). The block
// index is advanced, not divided, per element (a group may straddle blocks).
LOWBIT_HOST_DEVICE void QuantizeGroup(const float* x, int64_t n, int64_t g, int64_t block, const float* scales,
                                      int bits, int levels, bool stochastic, uint64_t key, int64_t index_base,
                                      uint8_t* codes) {
  const float half_levels = 0.5f * static_cast<float>(levels);
  int64_t b = (8 * g) / block;
  int64_t next_block = (b + 1) * block;
  float inv = InvScale(scales[b]);
  uint32_t q[8];
  int64_t seed_high = -1;  // the high index bits `seed` was made for
  uint32_t seed = 0;
  for (int k = 0; k < 8; ++k) {
    const int64_t i = 8 * g + k;
    if (i >= n) {
      q[k] = 0;
      continue;
    }
    if (i == next_block) {
      ++b;
      next_block += block;
      inv = InvScale(scales[b]);
    }
    float u = 0.5f;
    if (stochastic) {
      const int64_t j = index_base + i;
      if ((j >> 32) != seed_high) {
        seed_high = j >> 32;
        seed = RoundingSeed(key, j);
      }
      u = RoundingNoiseWithSeed(seed, j);
    }
    q[k] = QuantizeOne(x[i], inv, half_levels, levels, u);
  }
  PackGroup(q, bits, codes + g * bits);
}

}  // namespace lowbit::kernels::internal
