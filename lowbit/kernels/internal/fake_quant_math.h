// Per-element fake-quantization arithmetic shared by the CPU kernels
// (kernels/cpu/fake_quant.cpp) and their CUDA twins, so both round alike.
//
// Integer grids follow ATen's fake_quantize_per_{tensor,channel}_affine
// exactly: q = zp + nearbyint(x * (1/s)) in float, clamped to [qmin, qmax],
// y = (q - zp) * s; the gradient mask is qmin <= q <= qmax before clamping.
// Mini-floats (fp8 e4m3/e5m2, fp4 e2m1) round to nearest even with
// subnormals and saturate at the largest finite value (no inf/NaN codes).
#pragma once
#include <cmath>
#include <cstdint>

#include "lowbit/kernels/host_device.h"  // FloatBits, BitsFloat
#include "lowbit/kernels/mini_float.h"

namespace lowbit::kernels {

// Element i of n uses the scale (zero point, offset) of group
// (i / inner) % groups; see kernels/cpu/fake_quant.h.
struct QuantGroups {
  int64_t n;
  int64_t inner;
  int64_t groups;
};

// Round to nearest, ties to even, for |v| <= 2^22: adding and removing
// 1.5 * 2^23 leaves no fraction bits, and the hardware rounds as nearbyint
// does in the default mode. Plain adds, so the loops vectorise (nearbyintf
// is a library call without SSE4.1). Callers clamp v into range first.
LOWBIT_HOST_DEVICE float RoundHalfEven(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// min(max(v, lo), hi) with comparisons, not fminf/fmaxf (library calls
// unless NaN semantics are relaxed); NaN becomes lo.
LOWBIT_HOST_DEVICE float Clamp(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
}

// floor(t) for |t| < 2^31 (callers clamp; NaN is theirs to handle): the
// integer truncation, minus one where it rounded up. Integer arithmetic on
// the comparison, so no branch (t's fraction is random in stochastic
// rounding, and a float select compiles to a mispredicted jump) and the
// loops vectorise; floorf is a library call without SSE4.1.
LOWBIT_HOST_DEVICE float FloorSmall(float t) {
  const int32_t i = static_cast<int32_t>(t);
  return static_cast<float>(i - static_cast<int32_t>(static_cast<float>(i) > t));
}

// Unbiased stochastic rounding of x onto scale * [qmin, qmax] with the draw u.
LOWBIT_HOST_DEVICE float StochasticRoundIntOne(float x, float scale, float inv_scale, float qmin, float qmax, float u) {
  const float t = Clamp(x * inv_scale + u, -4194304.0f, 4194304.0f);
  return Clamp(FloorSmall(t), qmin, qmax) * scale;
}

// One element on an integer grid. `code` gets the clamped integer level,
// `inside` whether x was representable without clipping.
LOWBIT_HOST_DEVICE float FakeQuantIntOne(float x, float scale, float inv_scale, float zero_point, float qmin,
                                         float qmax, float* code, bool* inside) {
  // Clamped before rounding: levels beyond +-2^22 clamp to the grid anyway,
  // and NaN goes below qmin, as ATen's int64 cast does.
  const float v = Clamp(x * inv_scale, -4194304.0f, 4194304.0f);
  const float q = Clamp(zero_point + RoundHalfEven(v), qmin - 1.0f, qmax + 1.0f);
  *inside = q >= qmin && q <= qmax;
  const float c = Clamp(q, qmin, qmax);
  *code = c;
  return (c - zero_point) * scale;
}

// The gradients of one element of FakeQuantIntOne with offset b (x is the
// raw input): dx = dy inside the grid, else 0; LSQ's per-element step term
// dy * ((y - x) / s inside, level - zp outside); the offset's dy outside.
struct IntGrads {
  float dx, dscale, doffset;
};
LOWBIT_HOST_DEVICE IntGrads FakeQuantIntGradOne(float x, float dy, float scale, float inv_scale, float zero_point,
                                                float offset, float qmin, float qmax) {
  float code;
  bool inside;
  const float xi = x - offset;
  const float yi = FakeQuantIntOne(xi, scale, inv_scale, zero_point, qmin, qmax, &code, &inside);
  return {inside ? dy : 0.0f, dy * (inside ? (yi - xi) * inv_scale : code - zero_point), inside ? 0.0f : dy};
}


// The spacing of format f's values around a (>= 0, < max): 2^(e - man_bits)
// with e = max(floor(log2 a), 1 - bias). From the exponent bits, no calls.
LOWBIT_HOST_DEVICE float MiniFloatStep(float a, MiniFloat f) {
  const int min_exp = 2 - (1 << (f.exp_bits - 1));  // 1 - bias: below it, subnormals
  int e = static_cast<int>((FloatBits(a) >> 23) & 0xFFu) - 127;
  if (e < min_exp) e = min_exp;
  return BitsFloat(static_cast<uint32_t>(e - f.man_bits + 127) << 23);
}

// Nearest value of the format (ties to even), saturating at +-max_value.
LOWBIT_HOST_DEVICE float RoundToMiniFloat(float x, MiniFloat f) {
  const float a = fabsf(x);
  if (!(a < f.max_value)) return x != x ? x : copysignf(f.max_value, x);  // NaN stays NaN
  // a / step is exact (a power of two) and below 2^(man_bits + 2).
  const float step = MiniFloatStep(a, f);
  const float r = RoundHalfEven(a / step) * step;
  return copysignf(r < f.max_value ? r : f.max_value, x);
}

// Stochastic rounding to the format: down or up to the neighbouring values
// with probabilities that make it unbiased (u uniform in [0, 1)); saturates.
LOWBIT_HOST_DEVICE float StochasticRoundToMiniFloat(float x, MiniFloat f, float u) {
  const float a = fabsf(x);
  if (!(a < f.max_value)) return x != x ? x : copysignf(f.max_value, x);
  const float step = MiniFloatStep(a, f);
  const float r = FloorSmall(a / step + u) * step;
  return copysignf(r < f.max_value ? r : f.max_value, x);
}

// One element on a scaled mini-float grid: y = s * RoundToMiniFloat(x / s).
LOWBIT_HOST_DEVICE float FakeQuantMiniFloatOne(float x, float scale, MiniFloat f, bool* inside) {
  const float v = x / scale;
  *inside = fabsf(v) <= f.max_value;
  return RoundToMiniFloat(v, f) * scale;
}

// QuEST's grid (Panferov et al. 2025): 2^bits levels evenly spaced on
// [-c, c], c = the row's clip value; step = 2c / (2^bits - 1). Returns the
// level and whether |level - x| <= step / 2 (the trust mask).
LOWBIT_HOST_DEVICE float QuestGridOne(float x, float clip, float step, float levels_minus_1, bool* trusted) {
  const float k = Clamp(RoundHalfEven(Clamp((x + clip) / step, -1.0f, levels_minus_1 + 1.0f)), 0.0f, levels_minus_1);
  const float y = k * step - clip;
  *trusted = fabsf(y - x) <= 0.5f * step;
  return y;
}

}  // namespace lowbit::kernels
