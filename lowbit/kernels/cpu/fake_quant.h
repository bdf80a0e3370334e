// CPU kernels for quantization-aware training: fake quantization on integer
// and mini-float grids (forward and the gradients of STE, LSQ and LSQ+),
// QuEST's per-row Gaussian-clipped grid, stochastic rounding, and the fast
// Walsh-Hadamard transform. The element arithmetic is
// kernels/internal/fake_quant_math.h; the ops layer kernels/fake_quant.h.
//
// Grouping: element i of n uses the scale (and zero point, offset) of group
// (i / inner) % groups. Per tensor: inner = n, groups = 1. Per channel along
// dimension d: inner = product of the sizes after d, groups = size(d). Per
// group of G along the last dimension: inner = G, groups = n / G.
#pragma once
#include <cstdint>

#include "lowbit/kernels/internal/fake_quant_math.h"

namespace lowbit::kernels::cpu {

using Groups = QuantGroups;

// y = (clamp(zp + nearbyint((x - offset) / s), qmin, qmax) - zp) * s + offset,
// per group. zero_point and offset may be null (0). mask (may be null) gets
// 1 where x was inside the grid; codes (may be null) the clamped level.
void FakeQuantInt(const float* x, Groups g, const float* scale, const float* zero_point, const float* offset,
                  float qmin, float qmax, float* y, uint8_t* mask, float* codes = nullptr);

// Gradients of FakeQuantInt with a straight-through x: dx = dy * inside;
// per element, d/ds (LSQ, Esser et al. 2020, eq. 3) = (y - x) / s inside,
// qmin - zp below, qmax - zp above; d/d offset (LSQ+, Bhalgat et al. 2020) =
// 1 outside, 0 inside. dscale and doffset may be null.
void FakeQuantIntBackward(const float* x, const float* dy, Groups g, const float* scale, const float* zero_point,
                          const float* offset, float qmin, float qmax, float* dx, float* dscale,
                          float* doffset);

// y = s * RoundToMiniFloat(x / s, f); mask (may be null) = |x / s| <= max.
void FakeQuantMiniFloat(const float* x, Groups g, const float* scale, MiniFloat f, float* y, uint8_t* mask);

// QuEST's grid on each row of `cols` elements: clip = clip_factor * RMS(row)
// + 1e-8, 2^bits levels evenly spaced on [-clip, clip]; mask = trust mask;
// clips (may be null) gets each row's clip.
void QuestQuantizeRows(const float* x, int64_t rows, int64_t cols, float clip_factor, int bits, float* y,
                       uint8_t* mask, float* clips = nullptr);

// y = clamp(floor(x / s + u), qmin, qmax) * s with u = Uniform(key, i): an
// unbiased rounding onto the grid s * [qmin, qmax] (inside it).
void StochasticRoundInt(const float* x, int64_t n, float scale, float qmin, float qmax, uint64_t key, float* y);

// y = s * StochasticRoundToMiniFloat(x / s, f, Uniform(key, i)).
void StochasticRoundMiniFloat(const float* x, int64_t n, float scale, MiniFloat f, uint64_t key, float* y);

// In place, each of `rows` rows of `cols` elements: blocks of `block` (a power
// of two dividing cols) multiplied by the orthonormal Walsh-Hadamard matrix
// H / sqrt(block) (Sylvester order). It is its own inverse.
void FastWalshHadamard(float* x, int64_t rows, int64_t cols, int64_t block);

}  // namespace lowbit::kernels::cpu
