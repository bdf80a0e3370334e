// The fake-quantization kernels against independent references: ATen's
// fake_quantize_per_{tensor,channel}_affine (bit for bit, values and masks),
// brute-force nearest search over every value of the mini-float formats, an
// explicit Hadamard matrix, QuEST's grid written with tensor ops, and the
// mean of stochastic rounding.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/kernels/fake_quant.h"
#include "lowbit/kernels/internal/fake_quant_math.h"  // RoundToMiniFloat, the reference
#include "tests/common/expect_error.h"

namespace lowbit::kernels {
namespace {

using lowbit::testing::ExpectError;

// Random values plus the edges: exact grid points, half-way ties, +-0 and
// values just outside the grid. (Values so large that x / s overflows int64
// are left out: ATen casts them to int64 first, which is undefined and
// gives qmin for +inf on x86; ours saturate, see SaturatesFarOutside.)
at::Tensor Values(double scale, int64_t zp, int64_t qmin, int64_t qmax) {
  torch::manual_seed(7);
  std::vector<at::Tensor> parts{torch::randn({5000}) * scale * (qmax - qmin) / 3};
  at::Tensor levels = torch::arange(qmin - 3, qmax + 4, torch::kFloat);
  parts.push_back((levels - zp) * scale);
  parts.push_back((levels - zp + 0.5) * scale);
  parts.push_back((levels - zp - 0.5) * scale);
  parts.push_back(torch::tensor({0.0f, -0.0f, 1e15f * static_cast<float>(scale), -1e15f * static_cast<float>(scale)}));
  return torch::cat(parts);
}

void ExpectBitEqual(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_TRUE(torch::equal(a.view(torch::kInt32), b.view(torch::kInt32)))
      << "first differences: " << a.masked_select(a.ne(b)).slice(0, 0, 5) << " vs "
      << b.masked_select(a.ne(b)).slice(0, 0, 5);
}

TEST(FakeQuantKernelTest, PerTensorIsBitEqualToATen) {
  struct Grid {
    double scale;
    int64_t zp, qmin, qmax;
  };
  for (const Grid g : {Grid{0.1, 0, -128, 127}, Grid{0.0371, 17, 0, 255}, Grid{1.7e-3, 0, -8, 7},
                       Grid{0.25, 3, 0, 15}, Grid{0.5, 0, -1, 1}, Grid{3.3, -2, -4, 3}}) {
    at::Tensor x = Values(g.scale, g.zp, g.qmin, g.qmax);
    auto [want, want_mask] = at::fake_quantize_per_tensor_affine_cachemask(x, g.scale, g.zp, g.qmin, g.qmax);
    at::Tensor mask;
    at::Tensor got = FakeQuantizeInt(x, torch::tensor({static_cast<float>(g.scale)}),
                                     torch::tensor({static_cast<float>(g.zp)}), {}, g.qmin, g.qmax, {}, &mask);
    SCOPED_TRACE(::testing::Message() << "scale " << g.scale << " zp " << g.zp << " [" << g.qmin << ", " << g.qmax << "]");
    ExpectBitEqual(got, want);
    EXPECT_TRUE(torch::equal(mask, want_mask));
  }
}

TEST(FakeQuantKernelTest, SaturatesFarOutside) {
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor x = torch::tensor({1e30f, -1e30f, inf, -inf});
  at::Tensor mask;
  at::Tensor y = FakeQuantizeInt(x, torch::tensor({0.5f}), torch::tensor({2.0f}), {}, 0, 15, {}, &mask);
  EXPECT_TRUE(torch::equal(y, torch::tensor({6.5f, -1.0f, 6.5f, -1.0f})));
  EXPECT_FALSE(mask.any().item<bool>());
}

TEST(FakeQuantKernelTest, PerChannelIsBitEqualToATen) {
  torch::manual_seed(11);
  for (int64_t axis : {0, 1, 2}) {
    at::Tensor x = torch::randn({6, 5, 7}) * 3;
    const int64_t c = x.size(axis);
    at::Tensor scale = torch::rand({c}) * 0.1 + 0.01;
    at::Tensor zp = torch::randint(0, 20, {c}, torch::kInt);
    at::Tensor want = at::fake_quantize_per_channel_affine(x, scale, zp, axis, 0, 255);
    at::Tensor got = FakeQuantizeInt(x, scale, zp.to(torch::kFloat), {}, 0, 255,
                                     {ScaleLayout::kPerChannel, axis, 0});
    SCOPED_TRACE(::testing::Message() << "axis " << axis);
    ExpectBitEqual(got, want);
  }
}

TEST(FakeQuantKernelTest, PerGroupIsPerTensorOnEachGroup) {
  torch::manual_seed(12);
  at::Tensor x = torch::randn({4, 24});
  at::Tensor scale = torch::rand({4 * 3}) * 0.1 + 0.02;
  at::Tensor got = FakeQuantizeInt(x, scale, {}, {}, -8, 7, {ScaleLayout::kPerGroup, 0, 8});
  for (int64_t g = 0; g < 12; ++g) {
    at::Tensor part = x.view({12, 8})[g];
    at::Tensor want = at::fake_quantize_per_tensor_affine(part, scale[g].item<float>(), 0, -8, 7);
    ExpectBitEqual(got.view({12, 8})[g], want);
  }
}

TEST(FakeQuantKernelTest, OffsetShiftsTheGridAndCodesAreTheLevels) {
  torch::manual_seed(13);
  at::Tensor x = torch::randn({1000});
  at::Tensor s = torch::tensor({0.3f}), b = torch::tensor({-0.45f});
  at::Tensor got = FakeQuantizeInt(x, s, {}, b, 0, 3, {});
  at::Tensor levels = torch::clamp(torch::round((x - b) * (1.0f / 0.3f)), 0, 3);
  EXPECT_TRUE(torch::allclose(got, levels * 0.3f + b, 0, 1e-6));
  EXPECT_TRUE(torch::equal(QuantizeIntCodes(x, s, {}, b, 0, 3, {}), levels));
}

TEST(FakeQuantKernelTest, BackwardGivesMaskedGradientAndLsqScaleTerms) {
  torch::manual_seed(14);
  at::Tensor x = torch::randn({3, 200}) * 2;
  at::Tensor dy = torch::randn({3, 200});
  at::Tensor s = torch::tensor({0.2f, 0.1f, 0.3f});
  const ScaleLayout per_row{ScaleLayout::kPerChannel, 0, 0};
  auto [dx, ds, db] = FakeQuantizeIntBackward(x, dy, s, {}, torch::zeros({3}), -8, 7, per_row, true, true);
  at::Tensor v = x / s.view({3, 1});
  at::Tensor q = torch::round(v);
  at::Tensor inside = q.ge(-8) & q.le(7);
  EXPECT_TRUE(torch::equal(dx, dy * inside));
  // LSQ eq. 3: round(v) - v inside, qmin below, qmax above.
  at::Tensor term = torch::where(inside, q - v, torch::where(q.lt(-8), torch::full_like(v, -8), torch::full_like(v, 7)));
  EXPECT_TRUE(torch::allclose(ds, (dy * term).sum(1), 1e-5, 1e-5)) << ds << (dy * term).sum(1);
  EXPECT_TRUE(torch::allclose(db, (dy * ~inside).sum(1), 1e-5, 1e-6));
}

// Every finite non-negative value of a mini-float format.
std::vector<float> AllValues(MiniFloat f) {
  std::vector<float> v;
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  for (int e = 0; e < (1 << f.exp_bits); ++e) {
    for (int m = 0; m < (1 << f.man_bits); ++m) {
      const double value = e == 0 ? std::ldexp(m, 1 - bias - f.man_bits)
                                  : std::ldexp(1.0 + m / double(1 << f.man_bits), e - bias);
      if (value <= f.max_value) v.push_back(static_cast<float>(value));
    }
  }
  return v;
}

TEST(FakeQuantKernelTest, MiniFloatRoundsToNearestEvenValueAndSaturates) {
  for (MiniFloat f : {MiniFloatE4M3(), MiniFloatE5M2(), MiniFloatE2M1()}) {
    const std::vector<float> values = AllValues(f);
    ASSERT_EQ(values.back(), f.max_value);
    // Inputs: each value, the midpoints, points between, and beyond the max.
    std::vector<float> inputs;
    for (size_t i = 0; i + 1 < values.size(); ++i) {
      const float a = values[i], b = values[i + 1];
      for (float t : {0.0f, 0.25f, 0.5f, 0.75f}) inputs.push_back(a + (b - a) * t);
    }
    inputs.push_back(f.max_value * 1.01f);
    inputs.push_back(f.max_value * 100);
    for (float in : inputs) {
      for (float sign : {1.0f, -1.0f}) {
        const float x = sign * in;
        // Brute force: nearest; at a tie the one with the even mantissa (even index).
        size_t best = 0;
        for (size_t i = 1; i < values.size(); ++i) {
          const float d = std::fabs(values[i] - in), bd = std::fabs(values[best] - in);
          if (d < bd || (d == bd && i % 2 == 0)) best = i;
        }
        ASSERT_EQ(RoundToMiniFloat(x, f), sign * values[best]) << "x " << x << " format e" << f.exp_bits << "m" << f.man_bits;
      }
    }
  }
  // The tensor op: scale, mask.
  at::Tensor x = torch::tensor({1.0f, -3.0f, 500.0f, 0.01f});
  at::Tensor mask;
  at::Tensor y = FakeQuantizeMiniFloat(x, torch::tensor({0.5f}), MiniFloatE2M1(), {}, &mask);
  EXPECT_TRUE(torch::equal(y, torch::tensor({1.0f, -3.0f, 3.0f, 0.0f})));
  EXPECT_TRUE(torch::equal(mask, torch::tensor({true, true, false, true})));
}

at::Tensor SylvesterHadamard(int64_t n) {
  at::Tensor h = torch::ones({1, 1});
  while (h.size(0) < n) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  return h / std::sqrt(static_cast<double>(n));
}

TEST(FakeQuantKernelTest, WalshHadamardEqualsTheMatrixAndIsOrthonormal) {
  torch::manual_seed(15);
  for (int64_t block : {1, 2, 8, 64, 128}) {
    at::Tensor x = torch::randn({5, 256});
    at::Tensor y = x.clone();
    FastWalshHadamard_(y, block);
    at::Tensor h = SylvesterHadamard(block).to(torch::kDouble);
    at::Tensor want = x.to(torch::kDouble).view({5, 256 / block, block}).matmul(h).view({5, 256});
    EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), want, 1e-5, 1e-5)) << "block " << block;
    EXPECT_NEAR(y.norm().item<double>(), x.norm().item<double>(), 1e-4 * x.norm().item<double>());
    FastWalshHadamard_(y, block);  // H H = I
    EXPECT_TRUE(torch::allclose(y, x, 1e-5, 1e-5)) << "block " << block;
  }
  at::Tensor odd = torch::randn({3, 12});
  EXPECT_THROW(FastWalshHadamard_(odd, 8), c10::Error);
  EXPECT_THROW(FastWalshHadamard_(odd, 3), c10::Error);
}

TEST(FakeQuantKernelTest, QuestRowsFollowTheGridAndTrustMask) {
  torch::manual_seed(16);
  at::Tensor x = torch::randn({8, 128}) * torch::rand({8, 1}) * 3;
  for (int64_t bits : {1, 2, 4}) {
    at::Tensor mask, clips;
    const double factor = 1.5;
    at::Tensor y = QuestQuantizeRows(x, factor, bits, &mask, &clips);
    at::Tensor rms = x.to(torch::kDouble).pow(2).mean(1, true).sqrt().to(torch::kFloat);
    at::Tensor clip = rms * factor + 1e-8;
    EXPECT_TRUE(torch::allclose(clips, clip.view({-1}), 1e-6, 0));
    const double levels = (1 << bits) - 1;
    at::Tensor step = 2 * clip / levels;
    at::Tensor k = torch::clamp(torch::round((x + clip) / step), 0, levels);
    EXPECT_TRUE(torch::allclose(y, k * step - clip, 1e-5, 1e-6)) << "bits " << bits;
    EXPECT_TRUE(torch::equal(mask, (y - x).abs().le(step / 2))) << "bits " << bits;
    // Inside the clip range every value is trusted; some outside are not.
    EXPECT_TRUE(mask.masked_select(x.abs().le(clip)).all().item<bool>());
    EXPECT_FALSE(mask.all().item<bool>());
  }
}

TEST(FakeQuantKernelTest, StochasticRoundingIsUnbiasedAndOnTheGrid) {
  at::Tensor x = torch::linspace(-1.3, 1.3, 101);
  at::Tensor sum = torch::zeros_like(x);
  const int draws = 4000;
  for (int k = 0; k < draws; ++k) {
    at::Tensor y = StochasticRoundInt(x, 0.25, -8, 7, static_cast<uint64_t>(k) * 7919);
    at::Tensor levels = y / 0.25;
    ASSERT_TRUE(torch::equal(levels, torch::round(levels)));
    ASSERT_TRUE((y - x).abs().lt(0.25 + 1e-6).all().item<bool>());
    sum += y;
  }
  EXPECT_LT((sum / draws - x).abs().max().item<float>(), 0.02f);
  // The mini-float version on e5m2 (the gradient format of fp8 training).
  at::Tensor g = torch::tensor({0.3f, -1.1f, 5e-3f});
  at::Tensor gsum = torch::zeros_like(g);
  for (int k = 0; k < draws; ++k) gsum += StochasticRoundMiniFloat(g, 1.0, MiniFloatE5M2(), k);
  EXPECT_TRUE(torch::allclose(gsum / draws, g, 0.02, 0));
}

TEST(FakeQuantKernelTest, BadInputsNameTheProblem) {
  at::Tensor x = torch::randn({4, 6});
  ExpectError([&] { FakeQuantizeInt(x, torch::tensor({0.0f}), {}, {}, -8, 7, {}); }, "scale must be > 0");
  ExpectError([&] { FakeQuantizeInt(x, torch::tensor({-1.0f}), {}, {}, -8, 7, {}); }, "got min -1");
  ExpectError([&] { FakeQuantizeInt(x, torch::ones({4}), {}, {}, -8, 7, {ScaleLayout::kPerGroup, 0, 4}); },
               "group_size must divide the last dimension (6), got 4");
  ExpectError([&] { FakeQuantizeInt(x, torch::ones({3}), {}, {}, -8, 7, {ScaleLayout::kPerChannel, 0, 0}); },
               "scale must have 4 elements, got 3");
  ExpectError([&] { FakeQuantizeInt(x, torch::ones({1}), {}, {}, 7, 7, {}); }, "qmin must be < qmax");
  ExpectError([&] { FakeQuantizeInt(x.to(torch::kDouble), torch::ones({1}), {}, {}, 0, 7, {}); }, "x must be Float");
  at::Tensor mask;
  ExpectError([&] { QuestQuantizeRows(x, 2.5, 9, &mask); }, "bits must be in [1, 8], got 9");
}

}  // namespace
}  // namespace lowbit::kernels
