// The arithmetic of the fused optimizer steps: the dynamic 8-bit code and the
// per-element update rules, shared by kernels/cpu/optim8bit.cpp and
// kernels/cuda/optim8bit.cu so both compute them identically (the CUDA build
// disables FMA contraction for the same reason). The formulas are in
// kernels/optim8bit.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "lowbit/kernels/host_device.h"
#include "lowbit/kernels/optim_types.h"

namespace lowbit::kernels {

namespace internal {

LOWBIT_HOST_DEVICE int32_t CellOf(uint32_t bits) {
  const int32_t key = static_cast<int32_t>((bits >> (23 - kCellMantissaBits)) & 0x7FFFu) -
                      (kCellLowExponent << kCellMantissaBits);
  const int32_t cell = key < 0 ? 0 : (key >= kCodeCells ? kCodeCells - 1 : key);
  return static_cast<int32_t>(bits >> 31) * kCodeCells + cell;
}

// The low 16 bits of x in value order: as they are for x >= 0, complemented
// for x < 0 (a larger magnitude is a smaller value).
LOWBIT_HOST_DEVICE uint32_t OrderedLow16(uint32_t bits) { return (bits ^ (0u - (bits >> 31))) & 0xFFFFu; }

LOWBIT_HOST_DEVICE uint32_t Encode(const DynamicCode& code, float x) {
  const uint32_t bits = FloatBits(x);
  const uint32_t entry = code.cells[CellOf(bits)];
  return (entry >> 17) + (OrderedLow16(bits) > (entry & 0x1FFFFu) ? 1u : 0u);
}

LOWBIT_HOST_DEVICE float Sqrt(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);  // correctly rounded unless built with -use_fast_math, as std::sqrt
#else
  return std::sqrt(x);
#endif
}

// 10^(i-6) for decade i = 0..6 of the dynamic maps.
LOWBIT_HOST_DEVICE float DecadeScale(int i) {
  const float scales[7] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f};
  return scales[i];
}

// Code k of the dynamic map, computed from its index in float arithmetic
// (the table DynamicCode::values holds exactly these; the AVX2 decoder
// recomputes them). Unsigned: k = 0 is 0, k = 255 is 1, otherwise m = k + 1
// falls in [2^e, 2^(e+1)) for decade e - 1, bin m - 2^e of 2^e. Signed: k =
// 127 is 0, k = 255 is 1, and t = |k - 127| falls in [2^e, 2^(e+1)) for
// decade e, bin t - 2^e of 2^e, negated below 127. A bin's value is the
// midpoint of its part of [0.1, 1], times the decade's scale.
LOWBIT_HOST_DEVICE float DynamicValue(bool is_signed, int k) {
  if (k == 255) return 1.0f;
  const int m = is_signed ? (k > 127 ? k - 127 : 127 - k) : k + 1;
  if (is_signed && m == 0) return 0.0f;
  if (!is_signed && k == 0) return 0.0f;
  int e = 0;
  while ((2 << e) <= m) ++e;
  const int bins = 1 << e;
  const float mid = 0.1f + 0.9f * ((static_cast<float>(m - bins) + 0.5f) / static_cast<float>(bins));
  const float v = DecadeScale(is_signed ? e : e - 1) * mid;
  return is_signed && k < 127 ? -v : v;
}

LOWBIT_HOST_DEVICE float InvAbsMax(float s) { return s > 0.0f ? 1.0f / s : 0.0f; }

// NaN and +-Inf gradient elements count as 0 (as if the element had no
// gradient this step); the states still decay.
LOWBIT_HOST_DEVICE float FiniteOrZero(float g) { return (g - g) == 0.0f ? g : 0.0f; }

LOWBIT_HOST_DEVICE float SignOf(float x) {
  return static_cast<float>(x > 0.0f) - static_cast<float>(x < 0.0f);  // sign(0) = 0; branch-free
}

// One element's step: returns the new parameter; m (signed state) and v
// (unsigned state) are updated in place where the rule has them.
template <OptimRule R>
LOWBIT_HOST_DEVICE float UpdateOne(const OptimStepArgs& a, bool has_m, float p, float g, float& m, float& v) {
  if (R == OptimRule::kLion) {
    // Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Alg. 2.
    const float c = a.beta1 * m + a.one_minus_beta1 * g;
    m = a.beta2 * m + a.one_minus_beta2 * g;
    return p * a.decay - a.lr * SignOf(c);
  }
  g = g + a.l2 * p;  // unconditional (l2 = 0 adds 0), so the loops have no branch and vectorise
  p = p * a.decay;
  if (R == OptimRule::kAdam) {
    // Kingma & Ba 2015, Alg. 1 (AdamW: Loshchilov & Hutter 2019, decay above).
    m = a.beta1 * m + a.one_minus_beta1 * g;
    v = a.beta2 * v + a.one_minus_beta2 * (g * g);
    return p - a.lr * (m / (Sqrt(v) * a.inv_sqrt_bc2 + a.eps));
  }
  if (R == OptimRule::kSgd) {
    if (!has_m) return p - a.lr * g;
    m = a.first_step ? g : a.beta1 * m + a.one_minus_beta1 * g;
    return p - a.lr * (a.nesterov ? g + a.beta1 * m : m);
  }
  if (R == OptimRule::kRmsprop) {
    // Tieleman & Hinton 2012, as torch.optim.RMSprop (not centered).
    v = a.beta2 * v + a.one_minus_beta2 * (g * g);
    const float step = g / (Sqrt(v) + a.eps);
    if (!has_m) return p - a.lr * step;
    m = a.beta1 * m + step;
    return p - a.lr * m;
  }
  // Adagrad (Duchi et al. 2011), as torch.optim.Adagrad.
  v = v + g * g;
  return p - a.lr * (g / (Sqrt(v) + a.eps));
}

template <OptimRule R>
using RuleConstant = std::integral_constant<OptimRule, R>;

// Calls f(RuleConstant<rule>, bool_constant<has_m>, bool_constant<has_v>)
// for the combinations that exist: Adam m and v; SGD m or none (momentum 0);
// Lion m; RMSprop v, or m and v (momentum); Adagrad v. Returns false for any
// other.
template <typename F>
bool DispatchRule(OptimRule rule, bool has_m, bool has_v, F&& f) {
  using Yes = std::true_type;
  using No = std::false_type;
  switch (rule) {
    case OptimRule::kAdam:
      if (!has_m || !has_v) return false;
      f(RuleConstant<OptimRule::kAdam>{}, Yes{}, Yes{});
      return true;
    case OptimRule::kSgd:
      if (has_v) return false;
      if (has_m) {
        f(RuleConstant<OptimRule::kSgd>{}, Yes{}, No{});
      } else {
        f(RuleConstant<OptimRule::kSgd>{}, No{}, No{});
      }
      return true;
    case OptimRule::kLion:
      if (!has_m || has_v) return false;
      f(RuleConstant<OptimRule::kLion>{}, Yes{}, No{});
      return true;
    case OptimRule::kRmsprop:
      if (!has_v) return false;
      if (has_m) {
        f(RuleConstant<OptimRule::kRmsprop>{}, Yes{}, Yes{});
      } else {
        f(RuleConstant<OptimRule::kRmsprop>{}, No{}, Yes{});
      }
      return true;
    case OptimRule::kAdagrad:
      if (has_m || !has_v) return false;
      f(RuleConstant<OptimRule::kAdagrad>{}, No{}, Yes{});
      return true;
  }
  return false;
}

}  // namespace internal
}  // namespace lowbit::kernels
