// CPU kernels for blockwise uniform quantization with stochastic rounding
// (QSGD, Alistarh et al. 2017; TernGrad, Wen et al. 2017).
//
// Each block of `block` elements has the scale s = max |x|. Values map onto
// `levels` + 1 evenly spaced points -s, -s + 2s/levels, ..., s: t = (x/s + 1)
// * levels/2, q = floor(t + u) with u = RoundingNoise(key, index_base + i) (or 0.5
// for round-to-nearest), so E[decode(q)] = x. QSGD b-bit uses levels = 2^b - 1;
// ternary uses levels = 2 ({-s, 0, s}) stored in 2 bits. Codes of 8 elements
// form one 8*bits-bit little-endian word, i.e. `bits` bytes per 8 elements.
// The CUDA twins are kernels/cuda/quantize.cuh; the ops layer kernels/quantize.h.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu {

// Bytes of packed codes for n elements.
inline int64_t PackedCodeBytes(int64_t n, int bits) { return (n + 7) / 8 * bits; }

void BlockAbsMax(const float* x, int64_t n, int64_t block, float* scales);
void QuantizeBlockwise(const float* x, int64_t n, int64_t block, const float* scales, int bits, int levels,
                       bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes);
// BlockAbsMax then QuantizeBlockwise, in one pass over x (block by block).
void AbsMaxQuantizeBlockwise(const float* x, int64_t n, int64_t block, int bits, int levels, bool stochastic,
                             uint64_t key, int64_t index_base, float* scales, uint8_t* codes);
// Error feedback fused with compression: x = g + e (e null: zero) is
// quantized as AbsMaxQuantizeBlockwise does, and x is left holding the residual
// x - decode(code) (x may alias e). One pass over g and e where block % 8 == 0.
void QuantizeWithFeedback(const float* g, const float* e, float* x, int64_t n, int64_t block, int bits, int levels,
                          bool stochastic, uint64_t key, int64_t index_base, float* scales, uint8_t* codes);
// out[i] (+)= decode(code i).
void DequantizeBlockwise(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits,
                         int levels, float* out, bool accumulate);

}  // namespace lowbit::kernels::cpu
