// CPU kernels for 1-bit sign compression (1-bit Adam / signSGD): element
// 8j + k is bit k of byte j, set when x >= 0 (sign(0) = +1, as in DeepSpeed).
// The CUDA twins are kernels/cuda/sign.cuh; the ops layer is kernels/sign.h.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu {

// Writes ceil(n / 8) bytes; the unused high bits of the last byte are zero.
void PackSigns(const float* x, int64_t n, uint8_t* bits);
// scales[b] = mean |x| (p = 1) or sqrt(mean x^2) (p = 2) over block b.
void BlockScales(const float* x, int64_t n, int64_t block, int p, float* scales);
// BlockScales then PackSigns in one pass over x (block: a multiple of 8).
void PackSignsWithScales(const float* x, int64_t n, int64_t block, int p, float* scales, uint8_t* bits);
// Error feedback fused with 1-bit compression: x = g + e (e null: zero) gets
// PackSignsWithScales' scales and bits, and x is left holding the residual
// x - (bit ? s : -s) (x may alias e). One pass over g and e.
void PackSignsWithFeedback(const float* g, const float* e, float* x, int64_t n, int64_t block, int p, float* scales,
                           uint8_t* bits);
// The decoded sum of `count` messages of n elements each, divided once:
// out[i] = (sum over r = 0 .. count - 1, in order, of (bit ? s_r : -s_r)) / divisor,
// with s_r = scales[r][i / block] (block: a multiple of 8). One pass writing out.
void UnpackSignsSum(const uint8_t* const* bits, const float* const* scales, int count, int64_t n, int64_t block,
                    float divisor, float* out);
// out[i] (+)= bit ? s : -s with s = scales[i / block] (block: a multiple of 8).
void UnpackSigns(const uint8_t* bits, int64_t n, const float* scales, int64_t block, float* out, bool accumulate);

}  // namespace lowbit::kernels::cpu
