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

#include "lowbit/kernels/internal/host_device.h"

namespace lowbit::kernels {

// Element i of n uses the scale (zero point, offset) of group
// (i / inner) % groups; see kernels/cpu/fake_quant.h.
struct QuantGroups {
  int64_t n;
  int64_t inner;
  int64_t groups;
};

// One element on an integer grid. `code` gets the clamped integer level,
// `inside` whether x was representable without clipping.
LOWBIT_HOST_DEVICE float FakeQuantIntOne(float x, float scale, float inv_scale, float zero_point, float qmin,
                                         float qmax, float* code, bool* inside) {
  // Rounded level in float; clamped before any integer conversion so NaN and
  // huge values are defined (NaN goes below qmin, as ATen's int64 cast does).
  float q = zero_point + nearbyintf(x * inv_scale);
  q = fminf(fmaxf(q, qmin - 1.0f), qmax + 1.0f);
  *inside = q >= qmin && q <= qmax;
  const float c = fminf(fmaxf(q, qmin), qmax);
  *code = c;
  return (c - zero_point) * scale;
}

// A mini-float format: exponent bits, mantissa bits, largest finite value.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  float max_value;
};

// e4m3 as in the OCP FP8 spec ("fn": no infinities, max 448), e5m2 (max
// 57344), e2m1 (FP4, max 6).
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE4M3() { return {4, 3, 448.0f}; }
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE5M2() { return {5, 2, 57344.0f}; }
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE2M1() { return {2, 1, 6.0f}; }

// Nearest value of the format (ties to even), saturating at +-max_value.
LOWBIT_HOST_DEVICE float RoundToMiniFloat(float x, MiniFloat f) {
  const float a = fabsf(x);
  if (!(a < f.max_value)) return x != x ? x : copysignf(f.max_value, x);  // NaN stays NaN
  if (a == 0.0f) return x;
  const int min_exp = 2 - (1 << (f.exp_bits - 1));  // 1 - bias: below it, subnormals
  int e = ilogbf(a);
  if (e < min_exp) e = min_exp;
  // Spacing of the format at this binade; a power of two, so a / step is exact.
  const float step = ldexpf(1.0f, e - f.man_bits);
  const float r = fminf(nearbyintf(a / step) * step, f.max_value);
  return copysignf(r, x);
}

// Stochastic rounding to the format: down or up to the neighbouring values
// with probabilities that make it unbiased (u uniform in [0, 1)); saturates.
LOWBIT_HOST_DEVICE float StochasticRoundToMiniFloat(float x, MiniFloat f, float u) {
  const float a = fabsf(x);
  if (!(a < f.max_value)) return x != x ? x : copysignf(f.max_value, x);
  if (a == 0.0f) return x;
  const int min_exp = 2 - (1 << (f.exp_bits - 1));
  int e = ilogbf(a);
  if (e < min_exp) e = min_exp;
  const float step = ldexpf(1.0f, e - f.man_bits);
  return copysignf(fminf(floorf(a / step + u) * step, f.max_value), x);
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
  float k = nearbyintf((x + clip) / step);
  k = fminf(fmaxf(k, 0.0f), levels_minus_1);
  const float y = k * step - clip;
  *trusted = fabsf(y - x) <= 0.5f * step;
  return y;
}

}  // namespace lowbit::kernels
