// The compression kernels against the math they implement.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "lowbit/kernels/internal/counter_rng.h"
#include "lowbit/kernels/quantize.h"
#include "lowbit/kernels/sign.h"
#include "lowbit/kernels/topk.h"

namespace lowbit::kernels {
namespace {

TEST(Signs, PackUnpackIsScaleTimesSign) {
  for (int64_t n : {1, 7, 8, 9, 1000, 65541}) {
    at::Tensor x = torch::randn({n});
    x[0] = 0.0f;  // sign(0) = +1
    at::Tensor bits = PackSigns(x);
    ASSERT_EQ(bits.numel(), (n + 7) / 8);
    at::Tensor y = torch::empty({n});
    // One scale per 16 elements: 0.5, 1.5, 2.5, ...
    const int64_t nb = (n + 15) / 16;
    at::Tensor scales = torch::arange(nb, torch::kFloat) + 0.5f;
    UnpackSigns(bits, scales, 16, y, /*accumulate=*/false);
    at::Tensor s = scales.repeat_interleave(16).narrow(0, 0, n);
    at::Tensor expected = torch::where(x >= 0, s, -s);
    EXPECT_TRUE(torch::equal(y, expected)) << "n=" << n;
    UnpackSigns(bits, scales * 0.5f, 16, y, /*accumulate=*/true);
    EXPECT_TRUE(torch::equal(y, expected * 1.5f)) << "n=" << n;
    at::Tensor rms = torch::empty({nb}), l1 = torch::empty({nb});
    BlockScales(x, 16, 2, rms);
    BlockScales(x, 16, 1, l1);
    at::Tensor want_rms = torch::empty({nb}), want_l1 = torch::empty({nb});
    for (int64_t b = 0; b < nb; ++b) {
      at::Tensor part = x.narrow(0, 16 * b, std::min<int64_t>(16, n - 16 * b));
      want_rms[b] = part.pow(2).mean().sqrt();
      want_l1[b] = part.abs().mean();
    }
    EXPECT_TRUE(torch::allclose(rms, want_rms)) << "n=" << n;
    EXPECT_TRUE(torch::allclose(l1, want_l1)) << "n=" << n;
    // Padding bits of the last byte are zero.
    if (n % 8 != 0) EXPECT_EQ(bits[-1].item<uint8_t>() >> (n % 8), 0) << "n=" << n;
  }
}

TEST(Signs, BitLayout) {
  at::Tensor x = torch::tensor({1.0f, -1.0f, -1.0f, 2.0f, -3.0f, 0.0f, -0.5f, 4.0f, -1.0f, 1.0f});
  at::Tensor bits = PackSigns(x);
  EXPECT_EQ(bits[0].item<uint8_t>(), 0b10101001);
  EXPECT_EQ(bits[1].item<uint8_t>(), 0b10);
}

QuantSpec Spec(int bits, int levels, int64_t block, bool stochastic) {
  QuantSpec s;
  s.bits = bits;
  s.levels = levels;
  s.block = block;
  s.stochastic = stochastic;
  return s;
}

at::Tensor RoundTrip(const at::Tensor& x, const QuantSpec& spec, uint64_t key) {
  at::Tensor scales = torch::empty({NumBlocks(x.numel(), spec)});
  at::Tensor codes = torch::empty({PackedCodeBytes(x.numel(), spec)}, torch::kByte);
  BlockAbsMax(x, spec.block, scales);
  QuantizeBlockwise(x, scales, spec, key, 0, codes);
  at::Tensor y = torch::empty_like(x);
  DequantizeBlockwise(codes, scales, spec, y, /*accumulate=*/false);
  return y;
}

TEST(Quantize, NearestRoundingErrorIsAtMostHalfAStep) {
  for (int bits = 1; bits <= 8; ++bits) {
    const int levels = (1 << bits) - 1;
    const QuantSpec spec = Spec(bits, levels, 64, false);
    at::Tensor x = torch::randn({1003});
    at::Tensor y = RoundTrip(x, spec, 1);
    at::Tensor scale = std::get<0>(torch::nn::functional::pad(x, torch::nn::functional::PadFuncOptions({0, 21}))
                                       .abs()
                                       .view({-1, 64})
                                       .max(1))
                           .repeat_interleave(64)
                           .narrow(0, 0, 1003);
    at::Tensor step = 2 * scale / levels;
    EXPECT_TRUE(((y - x).abs() <= step / 2 + 1e-6).all().item<bool>()) << "bits=" << bits;
    // The block maximum is exactly representable.
    EXPECT_TRUE(torch::allclose(y.abs().max(), x.abs().max())) << "bits=" << bits;
  }
}

TEST(Quantize, StochasticRoundingIsUnbiased) {
  // Each element's mean over T independent keys is within 5 standard errors
  // of the input; the rounding variance is at most step^2 / 4 per draw.
  const int64_t n = 512;
  const int trials = 400;
  for (auto [bits, levels] : {std::pair{1, 1}, std::pair{2, 2}, std::pair{4, 15}}) {
    const QuantSpec spec = Spec(bits, levels, 128, true);
    at::Tensor x = torch::randn({n});
    at::Tensor sum = torch::zeros({n}, torch::kDouble);
    for (int t = 0; t < trials; ++t) sum += RoundTrip(x, spec, MixKey(99, t)).to(torch::kDouble);
    at::Tensor mean = sum / trials;
    const double step = 2.0 * x.abs().max().item<double>() / levels;
    const double bound = 5.0 * (step / 2.0) / std::sqrt(double(trials));
    EXPECT_LT((mean - x.to(torch::kDouble)).abs().max().item<double>(), bound) << "bits=" << bits;
    // And it is not the identity: single draws differ from the input.
    EXPECT_GT((RoundTrip(x, spec, 5) - x).abs().max().item<float>(), 0.0f);
  }
}

TEST(Quantize, SameKeySameCodes) {
  const QuantSpec spec = Spec(3, 7, 32, true);
  at::Tensor x = torch::randn({777});
  EXPECT_TRUE(torch::equal(RoundTrip(x, spec, 42), RoundTrip(x, spec, 42)));
  EXPECT_FALSE(torch::equal(RoundTrip(x, spec, 42), RoundTrip(x, spec, 43)));
}

TEST(Quantize, RejectsBadSpec) {
  at::Tensor x = torch::randn({16}), scales = torch::empty({1}), codes = torch::empty({0}, torch::kByte);
  try {
    QuantizeBlockwise(x, scales, Spec(9, 3, 16, true), 0, 0, codes);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bits must be in [1, 8], got 9"), std::string::npos) << e.what();
  }
  EXPECT_THROW(QuantizeBlockwise(x, scales, Spec(2, 4, 16, true), 0, 0, codes), c10::Error);
}

TEST(TopK, PicksExactlyTheKLargestWithTiesToLowerIndex) {
  for (int64_t n : {1, 10, 1000, 100003}) {
    at::Tensor x = torch::randn({n});
    // Plant ties.
    if (n >= 10) {
      x[3] = 2.5f;
      x[7] = -2.5f;
      x[9] = 2.5f;
    }
    for (int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 100), n}) {
      auto [idx, val] = TopKByMagnitude(x, k);
      ASSERT_EQ(idx.numel(), k);
      // Reference: stable sort by descending magnitude, then the first k indices, ascending.
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      const float* p = x.data_ptr<float>();
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return std::fabs(p[a]) > std::fabs(p[b]); });
      std::vector<int64_t> want(order.begin(), order.begin() + k);
      std::sort(want.begin(), want.end());
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(idx[i].item<int32_t>(), want[i]) << "n=" << n << " k=" << k << " i=" << i;
        ASSERT_EQ(val[i].item<float>(), p[want[i]]);
      }
    }
  }
}

TEST(TopK, TieBreakWithinATieGroup) {
  at::Tensor x = torch::tensor({1.0f, -3.0f, 3.0f, 0.5f, 3.0f});
  auto [idx, val] = TopKByMagnitude(x, 2);
  EXPECT_EQ(idx[0].item<int32_t>(), 1);
  EXPECT_EQ(idx[1].item<int32_t>(), 2);
}

TEST(TopK, SelectAtLeastAndScatterAdd) {
  at::Tensor x = torch::randn({5000});
  auto [idx, val] = SelectAtLeast(x, 1.5f);
  at::Tensor mask = x.abs() >= 1.5f;
  EXPECT_EQ(idx.numel(), mask.sum().item<int64_t>());
  at::Tensor dense = torch::zeros({5000});
  ScatterAdd(idx, val, dense);
  EXPECT_TRUE(torch::equal(dense, torch::where(mask, x, torch::zeros_like(x))));
  at::Tensor bad = torch::tensor({0, 5000}, torch::kInt);
  EXPECT_THROW(ScatterAdd(bad, torch::ones({2}), dense), c10::Error);
}

TEST(RandomSubset, SharedKeyGivesTheSameIndicesAndTheDensity) {
  at::Tensor a = RandomSubset(7, 100000, 0.01, at::kCPU);
  at::Tensor b = RandomSubset(7, 100000, 0.01, at::kCPU);
  EXPECT_TRUE(torch::equal(a, b));
  // Binomial(1e5, 0.01): mean 1000, sd ~31.
  EXPECT_NEAR(a.numel(), 1000, 160);
  EXPECT_FALSE(torch::equal(a, RandomSubset(8, 100000, 0.01, at::kCPU)));
}

}  // namespace
}  // namespace lowbit::kernels
