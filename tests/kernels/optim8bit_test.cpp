// The 8-bit optimizer kernels against the math: the dynamic maps'
// definition, nearest-code encoding against a brute-force search, the
// blockwise error bound, and each fused step against the same update
// computed in double precision from the dequantized state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lowbit/kernels/internal/cuda_dispatch.h"
#include "lowbit/kernels/internal/optim_math.h"
#include "lowbit/kernels/optim8bit.h"

namespace lowbit::kernels {
namespace {

std::vector<float> Values(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(DynamicMap, SignedMatchesTheDefinition) {
  const std::vector<float> map = Values(DynamicMap(true));
  ASSERT_EQ(map.size(), 256u);
  EXPECT_TRUE(std::is_sorted(map.begin(), map.end()));
  EXPECT_EQ(std::adjacent_find(map.begin(), map.end()), map.end()) << "codes must be distinct";
  EXPECT_EQ(map[255], 1.0f);
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_FLOAT_EQ(map[0], -(0.1f + 0.9f * 63.5f / 64));  // about -0.993
  EXPECT_FLOAT_EQ(map[254], 0.1f + 0.9f * 63.5f / 64);
  EXPECT_FLOAT_EQ(map[128], 5.5e-7f);                    // 1e-6 * (0.1 + 1) / 2
  EXPECT_FLOAT_EQ(map[126], -5.5e-7f);
  EXPECT_EQ(std::count_if(map.begin(), map.end(), [](float v) { return v > 0; }), 128);  // 127 and 1.0
  EXPECT_EQ(std::count_if(map.begin(), map.end(), [](float v) { return v < 0; }), 127);
  // Decade i (values in [1e-7, 1e-6) * 10^i) holds 2^i codes of each sign.
  for (int i = 0; i < 7; ++i) {
    const double lo = std::pow(10.0, i - 7), hi = std::pow(10.0, i - 6);
    EXPECT_EQ(std::count_if(map.begin(), map.end(), [&](float v) { return v > lo && v < hi; }), 1 << i) << i;
    EXPECT_EQ(std::count_if(map.begin(), map.end(), [&](float v) { return -v > lo && -v < hi; }), 1 << i) << i;
  }
}

TEST(DynamicMap, UnsignedMatchesTheDefinition) {
  const std::vector<float> map = Values(DynamicMap(false));
  ASSERT_EQ(map.size(), 256u);
  EXPECT_TRUE(std::is_sorted(map.begin(), map.end()));
  EXPECT_EQ(std::adjacent_find(map.begin(), map.end()), map.end());
  EXPECT_EQ(map[0], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
  EXPECT_FLOAT_EQ(map[1], 3.25e-7f);  // 1e-6 * midpoint of [0.1, 0.55]
  EXPECT_FLOAT_EQ(map[2], 7.75e-7f);
  EXPECT_FLOAT_EQ(map[254], 0.1f + 0.9f * 127.5f / 128);
  for (int i = 0; i < 7; ++i) {
    const double lo = std::pow(10.0, i - 7), hi = std::pow(10.0, i - 6);
    EXPECT_EQ(std::count_if(map.begin(), map.end(), [&](float v) { return v > lo && v < hi; }), 2 << i) << i;
  }
}

// The index of the code nearest to y, by exhaustive search in double.
int Nearest(const std::vector<float>& map, float y) {
  int best = 0;
  for (int k = 1; k < 256; ++k) {
    if (std::fabs(double{map[k]} - y) < std::fabs(double{map[best]} - y)) best = k;
  }
  return best;
}

// Values spread over every exponent the encoder's cells cover, both signs,
// plus zeros, subnormals, every code and every midpoint with its neighbours.
std::vector<float> EncodingProbe(const std::vector<float>& map) {
  std::vector<float> xs;
  std::mt19937 gen(11);
  std::uniform_int_distribution<uint32_t> mantissa(0, (1u << 23) - 1);
  std::uniform_int_distribution<uint32_t> exponent(90, 127);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = (static_cast<uint32_t>(i & 1) << 31) | (exponent(gen) << 23) | mantissa(gen);
    float x;
    std::memcpy(&x, &bits, sizeof x);
    xs.push_back(x);
  }
  for (float x : {0.0f, -0.0f, 1e-40f, -1e-40f, 1.0f, -1.0f, 1.0000001f, -1.0000001f}) xs.push_back(x);
  for (int k = 0; k < 256; ++k) {
    xs.push_back(map[k]);
    if (k < 255) {
      const float mid = 0.5f * (map[k] + map[k + 1]);
      for (float x : {mid, std::nextafter(mid, -2.0f), std::nextafter(mid, 2.0f)}) xs.push_back(x);
    }
  }
  return xs;
}

TEST(DynamicQuantize, EncodesToTheNearestCode) {
  for (bool is_signed : {true, false}) {
    const std::vector<float> map = Values(DynamicMap(is_signed));
    std::vector<float> xs = EncodingProbe(map);
    if (!is_signed) {
      for (float& x : xs) x = std::fabs(x);
    }
    const int64_t n = static_cast<int64_t>(xs.size());
    // One block of 32 per value, with absmax 1: codes are Encode(x) itself.
    at::Tensor x = torch::from_blob(xs.data(), {n}, torch::kFloat).clone();
    at::Tensor scale_one = torch::ones({n, 31});
    at::Tensor blocks = torch::cat({x.view({n, 1}), scale_one}, 1).reshape({-1}).contiguous();
    at::Tensor absmax = torch::empty({n}), codes = torch::empty({n * 32}, torch::kByte);
    QuantizeDynamic(blocks, is_signed, 32, absmax, codes);
    at::Tensor first = codes.view({n, 32}).select(1, 0).contiguous();
    int64_t exact = 0, checked = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float y = xs[i];  // absmax is max(|y|, 1) = 1 for |y| <= 1
      if (std::fabs(y) > 1.0f) continue;
      ++checked;
      const int got = first[i].item<uint8_t>();
      const int want = Nearest(map, y);
      exact += got == want;
      // The vectorised encoder (AVX2 where the CPU has it) is the scalar definition exactly.
      ASSERT_EQ(got, static_cast<int>(internal::Encode(internal::HostDynamicCode(is_signed), y))) << "x=" << y;
      // Off only at a tie to within the float rounding of the midpoint.
      const double err_got = std::fabs(double{map[got]} - y), err_want = std::fabs(double{map[want]} - y);
      ASSERT_LE(err_got - err_want, 4 * std::numeric_limits<float>::epsilon() * std::fabs(y) + 1e-45)
          << (is_signed ? "signed" : "unsigned") << " x=" << y << " got code " << got << " want " << want;
    }
    EXPECT_GE(exact, checked - 3 * 255) << "only values probed at a midpoint may tie";
  }
}

// Decoding (vectorised where the CPU allows: arithmetic, not a table) gives
// the map's values exactly, for every code, in every lane position.
TEST(DynamicQuantize, DecodesEveryCodeToTheMap) {
  for (bool is_signed : {true, false}) {
    const at::Tensor map = DynamicMap(is_signed);
    for (float absmax : {1.0f, 2.5f, 3e-7f}) {
      at::Tensor codes = torch::arange(0, 256, torch::kInt).to(torch::kByte).repeat({3});
      codes = torch::cat({codes.narrow(0, 3, 765), codes.narrow(0, 0, 3)});  // shift codes across lanes
      at::Tensor out = torch::empty({768});
      DequantizeDynamic(codes, torch::full({768 / 256}, absmax), is_signed, 256, out);
      EXPECT_TRUE(torch::equal(out, map.index_select(0, codes.to(torch::kLong)) * absmax))
          << (is_signed ? "signed" : "unsigned") << " absmax " << absmax;
    }
  }
}

TEST(DynamicQuantize, RoundTripErrorWithinHalfTheLocalGap) {
  for (bool is_signed : {true, false}) {
    const std::vector<float> map = Values(DynamicMap(is_signed));
    double max_gap = 0;
    for (int k = 0; k < 255; ++k) max_gap = std::max(max_gap, double{map[k + 1]} - map[k]);
    for (int64_t block : {32, 256, 4096}) {
      const int64_t n = 3 * block + 17;
      // Heavy-tailed, as optimizer states are: a few large values per block.
      at::Tensor x = torch::randn({n}) * torch::exp(2 * torch::randn({n}));
      if (!is_signed) x = x.abs();
      at::Tensor absmax = torch::empty({NumOptimBlocks(n, block)}), codes = torch::empty({n}, torch::kByte);
      QuantizeDynamic(x, is_signed, block, absmax, codes);
      at::Tensor y = torch::empty({n});
      DequantizeDynamic(codes, absmax, is_signed, block, y);
      for (int64_t b = 0; b < absmax.numel(); ++b) {
        at::Tensor part = x.narrow(0, b * block, std::min(block, n - b * block));
        EXPECT_FLOAT_EQ(absmax[b].item<float>(), part.abs().max().item<float>());
      }
      at::Tensor scale = absmax.repeat_interleave(block).narrow(0, 0, n);
      // Per element: |x - y| is the nearest code's error, times absmax.
      const std::vector<float> xv = Values(x), yv = Values(y), sv = Values(scale);
      for (int64_t i = 0; i < n; ++i) {
        const double t = double{xv[i]} / sv[i];
        double nearest = 2;
        for (float code : map) nearest = std::min(nearest, std::fabs(code - t));
        ASSERT_LE(std::fabs(double{xv[i]} - yv[i]), sv[i] * (nearest + 1e-6))
            << "block " << block << " i=" << i << " x=" << xv[i] << " y=" << yv[i];
      }
      // The stated bound for a whole block: half the largest gap of the map.
      EXPECT_LE(((x - y).abs() / scale).max().item<double>(), 0.5 * max_gap + 1e-6);
      // The largest element of a positive block comes back exactly.
      if (!is_signed) EXPECT_TRUE(torch::equal(x.max(), y.max()));
    }
  }
}

// The step's reference: the rule's formula in double precision.
struct RefState {
  at::Tensor p, m, v;
};

RefState Reference(const OptimStepArgs& a, const at::Tensor& p0, const at::Tensor& g0, const at::Tensor& m0,
                   const at::Tensor& v0) {
  at::Tensor p = p0.to(torch::kDouble), m = m0.defined() ? m0.to(torch::kDouble) : m0;
  at::Tensor v = v0.defined() ? v0.to(torch::kDouble) : v0;
  at::Tensor g = torch::nan_to_num(g0.to(torch::kDouble), 0, 0, 0);
  g = torch::where(torch::isfinite(g0), g, torch::zeros_like(g)) * a.grad_scale;
  const double b1 = a.beta1, b2 = a.beta2, c1 = a.one_minus_beta1, c2 = a.one_minus_beta2;
  switch (a.rule) {
    case OptimRule::kLion: {
      at::Tensor c = b1 * m + c1 * g;
      m = b2 * m + c2 * g;
      return {p * a.decay - a.lr * c.sign(), m, v};
    }
    case OptimRule::kAdam:
      g = g + a.l2 * p;
      p = p * a.decay;
      m = b1 * m + c1 * g;
      v = b2 * v + c2 * g * g;
      return {p - a.lr * m / (v.sqrt() * a.inv_sqrt_bc2 + a.eps), m, v};
    case OptimRule::kSgd:
      g = g + a.l2 * p;
      if (!m.defined()) return {p - a.lr * g, m, v};
      m = a.first_step ? g : b1 * m + c1 * g;
      return {p - a.lr * (a.nesterov ? g + b1 * m : m), m, v};
    case OptimRule::kRmsprop: {
      g = g + a.l2 * p;
      v = b2 * v + c2 * g * g;
      at::Tensor s = g / (v.sqrt() + a.eps);
      if (!m.defined()) return {p - a.lr * s, m, v};
      m = b1 * m + s;
      return {p - a.lr * m, m, v};
    }
    case OptimRule::kAdagrad:
      g = g + a.l2 * p;
      v = v + g * g;
      return {p - a.lr * g / (v.sqrt() + a.eps), m, v};
  }
  return {};
}

struct Case {
  const char* name;
  OptimStepArgs args;
  bool m, v;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  OptimStepArgs adam;
  adam.rule = OptimRule::kAdam;
  adam.lr = 1e-3f / (1 - 0.9f * 0.9f * 0.9f);
  adam.beta1 = 0.9f, adam.one_minus_beta1 = 0.1f, adam.beta2 = 0.999f, adam.one_minus_beta2 = 0.001f;
  adam.eps = 1e-8f, adam.inv_sqrt_bc2 = 1 / std::sqrt(1 - 0.999f * 0.999f * 0.999f), adam.l2 = 0.01f;
  cases.push_back({"adam", adam, true, true});
  OptimStepArgs adamw = adam;
  adamw.l2 = 0, adamw.decay = 1 - 1e-3f * 0.1f;
  cases.push_back({"adamw", adamw, true, true});
  OptimStepArgs sgd;
  sgd.rule = OptimRule::kSgd;
  sgd.lr = 0.05f, sgd.beta1 = 0.9f, sgd.one_minus_beta1 = 0.8f, sgd.l2 = 1e-4f;
  cases.push_back({"sgd", sgd, true, false});
  OptimStepArgs sgd_first = sgd;
  sgd_first.first_step = 1, sgd_first.nesterov = 1, sgd_first.one_minus_beta1 = 1;
  cases.push_back({"sgd_first_nesterov", sgd_first, true, false});
  OptimStepArgs lion;
  lion.rule = OptimRule::kLion;
  lion.lr = 1e-4f, lion.beta1 = 0.9f, lion.one_minus_beta1 = 0.1f, lion.beta2 = 0.99f, lion.one_minus_beta2 = 0.01f;
  lion.decay = 1 - 1e-4f * 0.1f;
  cases.push_back({"lion", lion, true, false});
  OptimStepArgs rms;
  rms.rule = OptimRule::kRmsprop;
  rms.lr = 1e-2f, rms.beta2 = 0.99f, rms.one_minus_beta2 = 0.01f, rms.eps = 1e-8f;
  cases.push_back({"rmsprop", rms, false, true});
  OptimStepArgs rms_m = rms;
  rms_m.beta1 = 0.5f;
  cases.push_back({"rmsprop_momentum", rms_m, true, true});
  OptimStepArgs adagrad;
  adagrad.rule = OptimRule::kAdagrad;
  adagrad.lr = 1e-2f, adagrad.eps = 1e-10f, adagrad.l2 = 1e-3f;
  cases.push_back({"adagrad", adagrad, false, true});
  return cases;
}

TEST(FusedOptimizerStep, EightBitStepIsTheRuleOnTheDequantizedState) {
  const int64_t block = 256, n = 5 * block + 77;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    at::Tensor p = torch::randn({n});
    at::Tensor g = torch::randn({n}) * 0.1;
    g[3] = NAN;
    g[700] = INFINITY;
    g[701] = -INFINITY;
    OptimState m, v;
    at::Tensor m_before, v_before;
    if (c.m) {
      m.codes = torch::empty({n}, torch::kByte), m.absmax = torch::empty({NumOptimBlocks(n, block)});
      QuantizeDynamic(torch::randn({n}) * 0.01, true, block, m.absmax, m.codes);
      m_before = torch::empty({n});
      DequantizeDynamic(m.codes, m.absmax, true, block, m_before);
    }
    if (c.v) {
      v.codes = torch::empty({n}, torch::kByte), v.absmax = torch::empty({NumOptimBlocks(n, block)});
      QuantizeDynamic(torch::rand({n}) * 0.01, false, block, v.absmax, v.codes);
      v_before = torch::empty({n});
      DequantizeDynamic(v.codes, v.absmax, false, block, v_before);
    }
    const RefState want = Reference(c.args, p, g, m_before, v_before);
    at::Tensor q = p.clone();
    FusedOptimizerStep(c.args, q, g, c.m ? &m : nullptr, c.v ? &v : nullptr, block);
    EXPECT_TRUE(torch::allclose(q.to(torch::kDouble), want.p, 1e-5, 1e-6))
        << "max |diff| " << (q.to(torch::kDouble) - want.p).abs().max().item<double>();
    EXPECT_TRUE(torch::isfinite(q).all().item<bool>());
    for (auto [state, ref, is_signed] : {std::make_tuple(&m, want.m, true), std::make_tuple(&v, want.v, false)}) {
      if (!ref.defined()) continue;
      at::Tensor after = torch::empty({n});
      DequantizeDynamic(state->codes, state->absmax, is_signed, block, after);
      // absmax is the new state's, and the codes are within the map's bound of it.
      std::vector<at::Tensor> parts;
      for (const at::Tensor& part : ref.split(block)) parts.push_back(part.abs().max());
      const at::Tensor ref_absmax = torch::stack(parts);
      EXPECT_TRUE(torch::allclose(state->absmax.to(torch::kDouble), ref_absmax, 1e-5, 0));
      at::Tensor scale = state->absmax.repeat_interleave(block).narrow(0, 0, n).to(torch::kDouble);
      EXPECT_LE(((after.to(torch::kDouble) - ref).abs() / scale).max().item<double>(), 0.5 * 0.0141 + 1e-5);
    }
  }
}

TEST(FusedOptimizerStep, Fp32StateStepIsTheRule) {
  const int64_t n = 10007;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    at::Tensor p = torch::randn({n}), g = torch::randn({n}) * 0.1;
    g[5] = NAN;
    OptimState m, v;
    if (c.m) m.values = torch::randn({n}) * 0.01;
    if (c.v) v.values = torch::rand({n}) * 0.01;
    const RefState want = Reference(c.args, p, g, m.values, v.values);
    at::Tensor q = p.clone();
    FusedOptimizerStep(c.args, q, g, c.m ? &m : nullptr, c.v ? &v : nullptr, 256);
    EXPECT_TRUE(torch::allclose(q.to(torch::kDouble), want.p, 1e-6, 1e-7));
    if (c.m) EXPECT_TRUE(torch::allclose(m.values.to(torch::kDouble), want.m, 1e-5, 1e-7));
    if (c.v) EXPECT_TRUE(torch::allclose(v.values.to(torch::kDouble), want.v, 1e-5, 1e-12));
  }
}

TEST(FusedOptimizerStep, NonFiniteGradientsActAsZero) {
  const int64_t block = 64, n = 1000;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    at::Tensor p = torch::randn({n}), g = torch::randn({n});
    at::Tensor bad = g.clone(), zero = g.clone();
    for (int64_t i : {0, 63, 64, 500, 999}) {
      bad[i] = i % 2 ? NAN : INFINITY;
      zero[i] = 0.0f;
    }
    auto run = [&](const at::Tensor& grad) {
      OptimState m, v;
      if (c.m) m.codes = torch::zeros({n}, torch::kByte), m.absmax = torch::zeros({NumOptimBlocks(n, block)});
      if (c.v) v.codes = torch::zeros({n}, torch::kByte), v.absmax = torch::zeros({NumOptimBlocks(n, block)});
      at::Tensor q = p.clone();
      FusedOptimizerStep(c.args, q, grad, c.m ? &m : nullptr, c.v ? &v : nullptr, block);
      return std::vector<at::Tensor>{q, c.m ? m.codes : at::Tensor(), c.v ? v.codes : at::Tensor(),
                                     c.m ? m.absmax : at::Tensor(), c.v ? v.absmax : at::Tensor()};
    };
    const auto a = run(bad), b = run(zero);
    for (size_t k = 0; k < a.size(); ++k) {
      if (a[k].defined()) EXPECT_TRUE(torch::equal(a[k], b[k])) << "output " << k;
    }
  }
}

TEST(FusedOptimizerStep, BadInputsAreNamed) {
  const int64_t n = 512;
  at::Tensor p = torch::randn({n}), g = torch::randn({n});
  OptimState m{torch::Tensor(), torch::zeros({n}, torch::kByte), torch::zeros({2})};
  OptimState v{torch::Tensor(), torch::zeros({n}, torch::kByte), torch::zeros({2})};
  OptimStepArgs adam;
  EXPECT_THROW(
      {
        try {
          FusedOptimizerStep(adam, p, g, &m, &v, 100);
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("power of two in [32, 4096], got 100"), std::string::npos) << e.what();
          throw;
        }
      },
      c10::Error);
  EXPECT_THROW(FusedOptimizerStep(adam, p, g, &m, nullptr, 256), c10::Error);  // Adam needs v
  EXPECT_THROW(FusedOptimizerStep(adam, p, g.narrow(0, 0, 10).contiguous(), &m, &v, 256), c10::Error);
  at::Tensor as_double = p.to(torch::kDouble);
  EXPECT_THROW(FusedOptimizerStep(adam, as_double, g, &m, &v, 256), c10::Error);
  OptimState fp32{torch::zeros({n})};
  EXPECT_THROW(FusedOptimizerStep(adam, p, g, &m, &fp32, 256), c10::Error);  // mixed kinds
  EXPECT_THROW(CheckOptimBlock(8192), c10::Error);
}

}  // namespace
}  // namespace lowbit::kernels
