// L-GreCo's dynamic program against brute force, and the adaptive hooks' bad
// inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "lowbit/compress/adaptive_hook.h"
#include "lowbit/compress/registry.h"
#include "lowbit/compress/lgreco.h"
#include "lowbit/comm/local_process_group.h"
#include "tests/common/expect_error.h"

namespace lowbit::compress {
using namespace ::lowbit::comm;  // process groups, DDP and the hook interface

namespace {

using lowbit::testing::ExpectError;

// The cheapest total size over all C^L choices whose binned error fits.
std::optional<int64_t> BruteForce(const LayerChoiceProblem& p) {
  const size_t layers = p.bytes.size();
  std::vector<size_t> pick(layers, 0);
  std::optional<int64_t> best;
  while (true) {
    int64_t bytes = 0, bins = 0;
    for (size_t l = 0; l < layers; ++l) {
      bytes += p.bytes[l][pick[l]];
      bins += ErrorBins(p.errors[l][pick[l]], p.budget, p.bins);
    }
    if (bins <= p.bins && (!best || bytes < *best)) best = bytes;
    size_t l = 0;
    while (l < layers && ++pick[l] == p.bytes[l].size()) pick[l++] = 0;
    if (l == layers) break;
  }
  return best;
}

TEST(LGreCoDp, EqualsBruteForceAndKeepsTheBudget) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> layers_dist(1, 6), cand_dist(1, 4), bytes_dist(0, 5000);
  std::uniform_real_distribution<double> err_dist(0.0, 1.0), frac_dist(0.05, 0.9);
  const int64_t bin_choices[] = {7, 100, 10000};
  int feasible = 0, infeasible = 0;
  for (int trial = 0; trial < 600; ++trial) {
    LayerChoiceProblem p;
    const int layers = layers_dist(rng);
    double max_total = 0;
    for (int l = 0; l < layers; ++l) {
      const int c = cand_dist(rng);
      p.bytes.emplace_back();
      p.errors.emplace_back();
      double max_err = 0;
      for (int k = 0; k < c; ++k) {
        p.bytes.back().push_back(bytes_dist(rng));
        // Some exact zeros and repeats, as uncompressed or saturated candidates give.
        const double e = trial % 5 == 0 && k == 0 ? 0.0 : std::round(err_dist(rng) * 50) / 50;
        p.errors.back().push_back(e);
        max_err = std::max(max_err, e);
      }
      max_total += max_err;
    }
    p.budget = std::max(1e-3, frac_dist(rng) * max_total);
    p.bins = bin_choices[trial % 3];
    const std::optional<int64_t> expected = BruteForce(p);
    const std::optional<LayerChoice> got = SolveLayerChoices(p);
    ASSERT_EQ(expected.has_value(), got.has_value()) << "trial " << trial;
    if (!got) {
      ++infeasible;
      continue;
    }
    ++feasible;
    EXPECT_EQ(got->bytes, *expected) << "trial " << trial;
    ASSERT_EQ(got->choice.size(), static_cast<size_t>(layers));
    int64_t bytes = 0, bins = 0;
    double error = 0;
    for (int l = 0; l < layers; ++l) {
      bytes += p.bytes[l][got->choice[l]];
      bins += ErrorBins(p.errors[l][got->choice[l]], p.budget, p.bins);
      error += p.errors[l][got->choice[l]];
    }
    EXPECT_EQ(bytes, got->bytes) << "trial " << trial;
    EXPECT_EQ(bins, got->error_bins) << "trial " << trial;
    EXPECT_LE(bins, p.bins) << "trial " << trial;
    EXPECT_LE(error, p.budget * (1 + 1e-12)) << "trial " << trial;  // the real budget holds too
    EXPECT_DOUBLE_EQ(error, got->error) << "trial " << trial;
  }
  // Both outcomes were exercised.
  EXPECT_GT(feasible, 100);
  EXPECT_GT(infeasible, 10);
}

TEST(LGreCoDp, SpendsTheBudgetWhereItIsCheapest) {
  // Layer 0 is big: halving its size costs 0.3 error. Layer 1 is small and
  // can buy that error back for 10 bytes. Uniform (candidate 1 each) costs
  // 1000 + 100 bytes at error 0.5 + 0.5.
  LayerChoiceProblem p;
  p.bytes = {{500, 1000, 2000}, {50, 100, 110}};
  p.errors = {{0.8, 0.5, 0.2}, {0.9, 0.5, 0.2}};
  p.budget = 1.01;
  const auto got = SolveLayerChoices(p);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->choice, (std::vector<int>{0, 2}));
  EXPECT_EQ(got->bytes, 610);
  EXPECT_DOUBLE_EQ(got->error, 1.0);
}

TEST(LGreCoDp, ErrorBinsRoundUp) {
  EXPECT_EQ(ErrorBins(0.0, 1.0, 100), 0);
  EXPECT_EQ(ErrorBins(0.001, 1.0, 100), 1);
  EXPECT_EQ(ErrorBins(0.5, 1.0, 100), 50);
  EXPECT_EQ(ErrorBins(1.0, 1.0, 100), 100);
  EXPECT_EQ(ErrorBins(1.5, 1.0, 100), 101);  // alone over the budget
  EXPECT_EQ(ErrorBins(1e300, 1e-300, 100), 101);
}

TEST(LGreCoBadInput, ClearErrors) {
  LayerChoiceProblem p;
  p.bytes = {{1, 2}, {}};
  p.errors = {{0.1, 0.2}, {}};
  p.budget = 1.0;
  ExpectError([&] { SolveLayerChoices(p); }, "layer 1 has an empty candidate set");
  p.bytes[1] = {3};
  p.errors[1] = {0.1};
  p.budget = 0.0;
  ExpectError([&] { SolveLayerChoices(p); }, "budget must be finite and > 0, got 0");
  p.budget = 1.0;
  p.errors[0][1] = std::nan("");
  ExpectError([&] { SolveLayerChoices(p); }, "layer 0 candidate 1 has error nan");

  auto pg = std::make_shared<LocalProcessGroup>();
  AdaptiveOptions o;
  o.family = AdaptiveFamily::kTopK;
  o.candidates = {};
  ExpectError([&] { AdaptiveHook(pg, o); }, "adaptive_topk: the candidate set is empty");
  o.candidates = {0.01, 0.02};
  o.alpha = 0.0;
  ExpectError([&] { AdaptiveHook(pg, o); }, "adapt alpha must be > 0, got 0");
  o.alpha = -1.0;
  ExpectError([&] { AdaptiveHook(pg, o); }, "adapt alpha must be > 0, got -1");
  o.alpha = 1.0;
  o.period = 0;
  ExpectError([&] { AdaptiveHook(pg, o); }, "adapt period must be >= 1 step, got 0");
  o.period = 5;
  o.window = 6;
  ExpectError([&] { AdaptiveHook(pg, o); }, "adapt window must be in [1, period=5], got 6");
  o.window = 2;
  o.candidates = {0.01, 1.5};
  ExpectError([&] { AdaptiveHook(pg, o); }, "candidate density must be in (0, 1], got 1.5");
  o.family = AdaptiveFamily::kQsgd;
  o.default_value = 4;
  o.candidates = {2, 4.5};
  ExpectError([&] { AdaptiveHook(pg, o); }, "bits must be an integer in [1, 8], got 4.5");
  o.family = AdaptiveFamily::kPowerSgd;
  o.candidates = {0, 4};
  ExpectError([&] { AdaptiveHook(pg, o); }, "rank must be an integer >= 1, got 0");

  // Through the registry: errors name the hook and the setting.
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_candidates", ""}}); },
              "hook 'adaptive_powersgd': setting 'adapt_candidates' is empty");
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_alpha", "0"}}); },
              "hook 'adaptive_powersgd': setting 'adapt_alpha' must be in (0, inf], got 0");
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_period", "0"}}); },
              "hook 'adaptive_powersgd': setting 'adapt_period' must be in [1, inf], got 0");
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_period", "10"}, {"adapt_window", "20"}}); },
              "window");
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_overrides", "fc1.weight"}}); },
              "must be pattern=value or pattern=plain, got 'fc1.weight'");
  ExpectError([&] { MakeCommHook(pg, "adaptive_powersgd", {{"adapt_overrides", "fc1.weight=lots"}}); },
              "must be a number or plain, got 'lots'");
  ExpectError([&] { MakeCommHook(pg, "adaptive_topk", {{"exchange", "twophase"}}); },
              "cannot use the twophase exchange");
}

// L-GreCo is anchored to its uniform hook: each adaptive hook's settings
// default to that hook's (top-k's dense threshold of 8192 elements too).
TEST(LGreCoCandidates, DefaultsAreTheUniformHooks) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"adaptive_topk", "topk"}, {"adaptive_qsgd", "qsgd"}, {"adaptive_powersgd", "powersgd"}};
  for (const auto& [adaptive, uniform] : pairs) {
    for (const HookSetting& s : FindHook(uniform).settings) {
      if (s.key == "warmup_steps") continue;  // nothing is adapted before compression starts (TopK(0))
      const HookSetting* a = FindHook(adaptive).Find(s.key);
      ASSERT_NE(a, nullptr) << adaptive << " lacks " << s.key;
      EXPECT_EQ(a->default_value, s.default_value) << adaptive << " " << s.key;
    }
  }
}

TEST(LGreCoCandidates, AroundTheDefault) {
  EXPECT_EQ(DefaultCandidates(AdaptiveFamily::kPowerSgd, 4), (std::vector<double>{1, 2, 4, 8, 16}));
  EXPECT_EQ(DefaultCandidates(AdaptiveFamily::kPowerSgd, 1), (std::vector<double>{1, 2, 4}));
  EXPECT_EQ(DefaultCandidates(AdaptiveFamily::kQsgd, 4), (std::vector<double>{2, 3, 4, 5, 6}));
  EXPECT_EQ(DefaultCandidates(AdaptiveFamily::kQsgd, 8), (std::vector<double>{6, 7, 8}));
  const std::vector<double> topk = DefaultCandidates(AdaptiveFamily::kTopK, 0.01);
  ASSERT_EQ(topk.size(), 7u);
  EXPECT_DOUBLE_EQ(topk.front(), 0.00125);
  EXPECT_DOUBLE_EQ(topk.back(), 0.08);
  EXPECT_EQ(DefaultCandidates(AdaptiveFamily::kTopK, 0.5), (std::vector<double>{0.0625, 0.125, 0.25, 0.5, 1.0}));
}

TEST(LGreCoRules, FirstMatchingRuleDecides) {
  auto pg = std::make_shared<LocalProcessGroup>();
  AdaptiveOptions o;
  o.family = AdaptiveFamily::kTopK;
  o.candidates = {0.01, 0.1};
  o.rules = {NameOverrideRule("fc2.*", std::nullopt), NameOverrideRule("conv*", 0.5), SkipSmallRule(1000, false),
             AdaptiveRule()};
  AdaptiveHook hook(pg, o);
  GradBucket b;
  b.buffer = torch::randn({2000 + 1200 + 40 + 1500 + 800});
  b.parameter_names = {"fc1.weight", "fc2.weight", "fc1.bias", "conv1.weight", "small.weight"};
  b.offsets = {0, 2000, 3200, 3240, 4740};
  b.gradients = {b.buffer.narrow(0, 0, 2000).view({20, 100}), b.buffer.narrow(0, 2000, 1200).view({12, 100}),
                 b.buffer.narrow(0, 3200, 40), b.buffer.narrow(0, 3240, 1500).view({15, 100}),
                 b.buffer.narrow(0, 4740, 800).view({8, 100})};
  hook.RunHook(b)->Wait();
  EXPECT_EQ(hook.ChoicesString(),
            "conv1.weight=0.5;fc1.bias=plain;fc1.weight=0.01;fc2.weight=plain;small.weight=plain");
  EXPECT_EQ(hook.layers().at("fc1.weight").handling.kind, LayerHandling::Kind::kAdaptive);
  EXPECT_EQ(hook.layers().at("conv1.weight").handling.kind, LayerHandling::Kind::kFixed);
}

}  // namespace
}  // namespace lowbit::compress
