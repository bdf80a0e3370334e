// The compression kernels against the math they implement.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/Parallel.h>

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

// The k largest |x| by a stable sort (ties to the lower index), ascending.
std::vector<int64_t> SortedTopK(const at::Tensor& x, int64_t k) {
  const int64_t n = x.numel();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const float* p = x.data_ptr<float>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return std::fabs(p[a]) > std::fabs(p[b]); });
  std::vector<int64_t> want(order.begin(), order.begin() + k);
  std::sort(want.begin(), want.end());
  return want;
}

TEST(TopK, LargeInputsMatchAFullSort) {
  // Large enough for the sampled threshold (n >= 2^17), with the inputs that
  // can fool a sample: heavy tails, a few huge values in one place, ties at
  // the k-th magnitude, mostly zeros, and all magnitudes equal.
  const int64_t n = (int64_t{1} << 18) + 37;
  std::vector<std::pair<std::string, at::Tensor>> cases;
  torch::manual_seed(3);
  cases.emplace_back("normal", torch::randn({n}));
  cases.emplace_back("cauchy", torch::empty({n}).cauchy_());
  at::Tensor local = torch::randn({n}) * 1e-3;
  local.narrow(0, 1000, 5000) = torch::randn({5000}) * 100;  // the top 1% all in one run the sample may miss
  cases.emplace_back("local", local);
  at::Tensor ties = torch::randint(0, 40, {n}).to(torch::kFloat) - 20;
  cases.emplace_back("ties", ties);
  at::Tensor sparse = torch::zeros({n});
  sparse.index_put_({torch::randint(0, n, {500})}, torch::randn({500}));
  cases.emplace_back("mostly_zero", sparse);
  cases.emplace_back("all_equal", torch::ones({n}) * -0.25);
  // One thread gathers in one pass; more gather per 2^18-element chunk (two
  // chunks here, the second of 37 elements). "one_chunk" (four chunks, every
  // candidate in the first) overflows that chunk's buffer, sized for an even
  // share, so it is counted and gathered again.
  at::Tensor one_chunk = torch::randn({int64_t{1} << 20}) * 0.01;
  one_chunk.narrow(0, 0, int64_t{1} << 18).normal_();
  cases.emplace_back("one_chunk", one_chunk);
  const int threads = at::get_num_threads();
  for (int t : {1, 3}) {
    at::set_num_threads(t);
    for (const auto& [name, x] : cases) {
      for (int64_t k : {int64_t{1}, n / 1000, n / 100, n / 20}) {
        auto [idx, val] = TopKByMagnitude(x, k);
        const std::vector<int64_t> want = SortedTopK(x, k);
        ASSERT_EQ(idx.numel(), k) << name;
        const int32_t* got = idx.data_ptr<int32_t>();
        for (int64_t i = 0; i < k; ++i) {
          ASSERT_EQ(got[i], want[i]) << name << " k=" << k << " i=" << i << " threads " << t;
          ASSERT_EQ(val[i].item<float>(), x[want[i]].item<float>()) << name;
        }
      }
    }
  }
  at::set_num_threads(threads);
}

// Element i's code from packed little-endian groups of 8.
uint32_t CodeAt(const at::Tensor& codes, int64_t i, int bits) {
  const uint8_t* c = codes.data_ptr<uint8_t>() + (i / 8) * bits;
  uint64_t word = 0;
  for (int b = 0; b < bits; ++b) word |= static_cast<uint64_t>(c[b]) << (8 * b);
  return static_cast<uint32_t>((word >> ((i % 8) * bits)) & ((1u << bits) - 1));
}

TEST(Quantize, CodesAreTheFormulaElementByElement) {
  // Every code equals q = clamp(floor((x / s + 1) * levels / 2 + u), 0,
  // levels) with u = RoundingNoise(key, index_base + i), computed here one
  // element at a time in double where exact, whatever loop (SIMD runs of 32,
  // tails, blocks that are not whole runs or groups) produced it; index_base
  // crosses 2^32, where the noise seed changes. Decoding gives q * 2s/levels - s.
  const uint64_t key = 0xC0FFEE;
  for (auto [bits, levels] : {std::pair{8, 255}, std::pair{4, 15}, std::pair{2, 2}, std::pair{3, 7}}) {
    for (int64_t block : {256, 32, 40, 12}) {
      for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{4099}}) {
        for (int64_t index_base : {int64_t{0}, int64_t{5}, (int64_t{1} << 32) - 1001}) {
          for (bool stochastic : {true, false}) {
            const QuantSpec spec = Spec(bits, levels, block, stochastic);
            at::Tensor x = torch::randn({n});
            at::Tensor scales = torch::empty({NumBlocks(n, spec)});
            at::Tensor codes = torch::empty({PackedCodeBytes(n, spec)}, torch::kByte);
            AbsMaxQuantizeBlockwise(x, spec, key, index_base, scales, codes);
            at::Tensor y = torch::full({n}, 0.5f);
            DequantizeBlockwise(codes, scales, spec, y, /*accumulate=*/true);
            const float* px = x.data_ptr<float>();
            for (int64_t i = 0; i < n; ++i) {
              const int64_t b = i / block;
              const float s = x.narrow(0, b * block, std::min(n, (b + 1) * block) - b * block).abs().max().item<float>();
              ASSERT_EQ(scales[b].item<float>(), s);
              const float u = stochastic ? RoundingNoise(key, index_base + i) : 0.5f;
              const float t = (px[i] * (1.0f / s) + 1.0f) * (0.5f * levels) + u;
              const uint32_t want = static_cast<uint32_t>(std::min<double>(std::max<double>(std::floor(t), 0), levels));
              ASSERT_EQ(CodeAt(codes, i, bits), want) << "bits=" << bits << " block=" << block << " n=" << n
                                                     << " base=" << index_base << " i=" << i;
              const float decoded = static_cast<float>(want) * (2.0f * s / static_cast<float>(levels)) - s;
              ASSERT_EQ(y[i].item<float>(), 0.5f + decoded) << i;
            }
          }
        }
      }
    }
  }
}

TEST(Quantize, RoundingNoiseIsUniformAndIndependentAcrossKeys) {
  // 2^20 draws: each of 64 bins within 5 standard deviations of its count,
  // the mean within 5 standard errors of 1/2, and two keys' streams
  // uncorrelated (|r| < 5 / sqrt(N)), also at a shift of one index.
  const int64_t n = int64_t{1} << 20;
  std::vector<int64_t> bins(64, 0);
  double sum = 0, sab = 0, sab_shift = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float u = RoundingNoise(11, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    ++bins[static_cast<int>(u * 64)];
    sum += u;
    sab += (u - 0.5) * (RoundingNoise(12, i) - 0.5);
    sab_shift += (u - 0.5) * (RoundingNoise(12, i + 1) - 0.5);
  }
  const double expect = static_cast<double>(n) / 64;
  for (int64_t c : bins) EXPECT_NEAR(c, expect, 5 * std::sqrt(expect));
  EXPECT_NEAR(sum / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_LT(std::fabs(sab / n * 12), 5 / std::sqrt(double(n)));
  EXPECT_LT(std::fabs(sab_shift / n * 12), 5 / std::sqrt(double(n)));
}

TEST(Signs, FusedScalesAndSignsEqualTheSeparateOps) {
  for (int64_t n : {int64_t{5}, int64_t{2048}, int64_t{70001}}) {
    for (int p : {1, 2}) {
      at::Tensor x = torch::randn({n});
      const int64_t nb = (n + 2047) / 2048;
      at::Tensor scales = torch::empty({nb}), bits = torch::empty({(n + 7) / 8}, torch::kByte);
      PackSignsWithScales(x, 2048, p, scales, bits);
      at::Tensor want_scales = torch::empty({nb});
      BlockScales(x, 2048, p, want_scales);
      EXPECT_TRUE(torch::equal(scales, want_scales)) << n;
      EXPECT_TRUE(torch::equal(bits, PackSigns(x))) << n;
      for (int64_t b = 0; b < nb; ++b) {
        at::Tensor part = x.narrow(0, 2048 * b, std::min<int64_t>(2048, n - 2048 * b)).to(torch::kDouble);
        const double want = p == 1 ? part.abs().mean().item<double>() : part.pow(2).mean().sqrt().item<double>();
        EXPECT_NEAR(scales[b].item<float>(), want, 1e-5 * want) << n;
      }
    }
  }
}

TEST(Feedback, FusedEqualsAddEncodeDecodeSubtract) {
  // Error feedback fused with compression gives exactly what the separate
  // steps give: x = g + e, encode x, residual = x - decode; also with no e
  // (the first step) and with the residual written over e.
  for (int64_t n : {int64_t{13}, int64_t{4096}, int64_t{70003}}) {
    at::Tensor g = torch::randn({n}), e = torch::randn({n}) * 0.3;
    for (bool with_e : {true, false}) {
      for (bool in_place : {false, true}) {
        if (in_place && !with_e) continue;
        const at::Tensor x = with_e ? g + e : g.clone();
        const std::string where = "n=" + std::to_string(n) + (with_e ? " e" : "") + (in_place ? " in place" : "");
        for (int p : {1, 2}) {
          const int64_t block = 2048;
          at::Tensor scales = torch::empty({(n + block - 1) / block}), bits = torch::empty({(n + 7) / 8}, torch::kByte);
          at::Tensor e_in = e.clone();
          at::Tensor residual = in_place ? e_in : torch::empty({n});
          PackSignsWithFeedback(g, with_e ? e_in : at::Tensor(), residual, block, p, scales, bits);
          at::Tensor want_scales = torch::empty_like(scales), want_bits = torch::empty_like(bits), sent = torch::empty({n});
          PackSignsWithScales(x, block, p, want_scales, want_bits);
          UnpackSigns(want_bits, want_scales, block, sent, false);
          EXPECT_TRUE(torch::equal(scales, want_scales)) << where;
          EXPECT_TRUE(torch::equal(bits, want_bits)) << where;
          EXPECT_TRUE(torch::equal(residual, x - sent)) << where;
        }
        for (auto [bits, levels, block] : {std::tuple{4, 15, 256}, std::tuple{8, 255, 256}, std::tuple{2, 2, 12}}) {
          const QuantSpec spec = Spec(bits, levels, block, true);
          at::Tensor scales = torch::empty({NumBlocks(n, spec)});
          at::Tensor codes = torch::empty({PackedCodeBytes(n, spec)}, torch::kByte);
          at::Tensor e_in = e.clone();
          at::Tensor residual = in_place ? e_in : torch::empty({n});
          QuantizeWithFeedback(g, with_e ? e_in : at::Tensor(), residual, spec, 9, 0, scales, codes);
          at::Tensor want_scales = torch::empty_like(scales), want_codes = torch::empty_like(codes);
          AbsMaxQuantizeBlockwise(x, spec, 9, 0, want_scales, want_codes);
          at::Tensor sent = torch::empty({n});
          DequantizeBlockwise(want_codes, want_scales, spec, sent, false);
          EXPECT_TRUE(torch::equal(scales, want_scales)) << where << " bits=" << bits;
          EXPECT_TRUE(torch::equal(codes, want_codes)) << where << " bits=" << bits;
          EXPECT_TRUE(torch::equal(residual, x - sent)) << where << " bits=" << bits;
        }
      }
    }
  }
}

TEST(Signs, SummedDecodeEqualsDecodingOneByOne) {
  // The all-gather mean of 1-bit messages in one pass equals decoding rank 0,
  // adding the others in rank order, then one division (also for P = 3,
  // where 1/P is inexact, and with a partial last block and byte).
  for (int count : {1, 3, 4}) {
    const int64_t n = 10007, block = 256;
    std::vector<at::Tensor> bits, scales;
    for (int r = 0; r < count; ++r) {
      at::Tensor x = torch::randn({n});
      at::Tensor s = torch::empty({(n + block - 1) / block}), b = torch::empty({(n + 7) / 8}, torch::kByte);
      PackSignsWithScales(x, block, 2, s, b);
      bits.push_back(b);
      scales.push_back(s);
    }
    at::Tensor want = torch::empty({n});
    for (int r = 0; r < count; ++r) UnpackSigns(bits[r], scales[r], block, want, r > 0);
    want.div_(static_cast<double>(count));
    at::Tensor got = torch::full({n}, 7.0f);
    UnpackSignsSum(bits, scales, block, count, got);
    EXPECT_TRUE(torch::equal(got, want)) << count;
  }
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
