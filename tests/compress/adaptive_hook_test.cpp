// The adaptive (L-GreCo) hooks on P real ranks against the same measurement
// and choice computed in one process: every rank simulates all P ranks'
// gradients, computes each layer's errors from the math (what top-k drops,
// the singular-value tail, a QSGD round trip), averages them, and finds the
// cheapest choice under the binned budget by brute force.
#include "lowbit/compress/adaptive_hook.h"

#include <absl/strings/str_cat.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/lgreco.h"
#include "lowbit/compress/registry.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::compress {
using namespace ::lowbit::comm;  // process groups, DDP and the hook interface

namespace {

struct LayerSpec {
  std::string name;
  std::vector<int64_t> shape;
};
// "c" is 1-D (plain); the others are adaptive.
const std::vector<LayerSpec> kLayers = {{"a", {128, 200}}, {"b", {32, 50}}, {"c", {40}}, {"d", {16, 128}}};

int64_t Numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Layer gradients with different structure: "a" dense and large, "b" a few
// large entries, "d" close to rank 4.
at::Tensor LayerGradient(size_t layer, int rank, int step) {
  at::Generator gen = at::detail::createCPUGenerator(100000 * step + 1000 * rank + static_cast<int>(layer));
  const auto& shape = kLayers[layer].shape;
  if (layer == 1) {
    at::Tensor g = at::randn(shape, gen) * 0.05;
    g.view({-1}).narrow(0, 0, 40).add_(at::randn({40}, gen) * 4);
    return g;
  }
  if (layer == 3) {
    at::Generator fixed = at::detail::createCPUGenerator(77 + rank);
    return at::matmul(at::randn({16, 4}, fixed), at::randn({4, 128}, gen)) + at::randn(shape, gen) * 0.02;
  }
  return at::randn(shape, gen) * (layer == 2 ? 1.0 : 0.5);
}

struct Bucket {
  GradBucket b;
  explicit Bucket(int rank, int step) {
    int64_t total = 0;
    for (const auto& l : kLayers) total += Numel(l.shape);
    b.buffer = torch::empty({total});
    int64_t offset = 0;
    for (size_t i = 0; i < kLayers.size(); ++i) {
      const int64_t n = Numel(kLayers[i].shape);
      b.parameter_names.push_back(kLayers[i].name);
      b.offsets.push_back(offset);
      b.gradients.push_back(b.buffer.narrow(0, offset, n).view(kLayers[i].shape));
      b.gradients.back().copy_(LayerGradient(i, rank, step));
      offset += n;
    }
  }
};

AdaptiveOptions Options(AdaptiveFamily family) {
  AdaptiveOptions o;
  o.family = family;
  o.period = 3;
  o.window = 2;
  o.rules = DefaultLayerRules(family, 100, false);
  switch (family) {
    case AdaptiveFamily::kTopK:
      o.default_value = 0.05;
      o.candidates = {0.0125, 0.025, 0.05, 0.1, 0.2};
      break;
    case AdaptiveFamily::kQsgd:
      o.default_value = 4;
      o.candidates = {2, 3, 4, 5, 6};
      o.qsgd_stochastic = false;
      break;
    case AdaptiveFamily::kPowerSgd:
      o.default_value = 2;
      o.candidates = {1, 2, 4, 8};
      o.powersgd.start_iter = 0;
      break;
  }
  o.compression.seed = 3;
  o.powersgd.seed = 3;
  return o;
}

// The math each family's error and size should follow.
double ReferenceError(AdaptiveFamily family, const at::Tensor& g, double v) {
  const at::Tensor x = g.reshape({-1}).to(at::kDouble);
  const int64_t n = x.numel();
  switch (family) {
    case AdaptiveFamily::kTopK: {
      const int64_t k = std::min<int64_t>(n, static_cast<int64_t>(std::ceil(v * n)));
      const at::Tensor sorted = std::get<0>(x.abs().sort(0, true));
      return sorted.narrow(0, k, n - k).norm().item<double>();
    }
    case AdaptiveFamily::kQsgd: {
      auto c = MakeQsgdCompressor(static_cast<int>(v), 256, false);
      at::Tensor f = g.reshape({-1}).contiguous();
      at::Tensor y = torch::empty_like(f);
      c->Decode(c->Encode(f, {}), {}, y, false);
      return (x - y.to(at::kDouble)).norm().item<double>();
    }
    case AdaptiveFamily::kPowerSgd: {
      const int64_t rows = g.size(0), cols = n / rows;
      const int64_t r = std::min<int64_t>({rows, cols, static_cast<int64_t>(v)});
      if ((rows + cols) * r * 2 >= rows * cols) return 0.0;  // sent uncompressed
      const at::Tensor s = at::linalg_svdvals(g.reshape({rows, cols}).to(at::kDouble));
      return s.narrow(0, r, s.numel() - r).norm().item<double>();
    }
  }
  return 0;
}

int64_t ReferenceBytes(AdaptiveFamily family, const std::vector<int64_t>& shape, double v) {
  const int64_t n = Numel(shape);
  switch (family) {
    case AdaptiveFamily::kTopK:
      return 8 * static_cast<int64_t>(std::ceil(v * n)) + 8;
    case AdaptiveFamily::kQsgd:
      return 4 * ((n + 255) / 256) + (n * static_cast<int64_t>(v) + 7) / 8 + 8;
    case AdaptiveFamily::kPowerSgd: {
      const int64_t rows = shape[0], cols = n / rows;
      const int64_t r = std::min<int64_t>({rows, cols, static_cast<int64_t>(v)});
      return (rows + cols) * r * 2 < rows * cols ? (rows + cols) * r * 4 : n * 4;
    }
  }
  return 0;
}

struct Expected {
  int64_t bytes = 0;   // the adaptive layers' total size after the decision
  double budget = 0;
};

// The decision at the start of step 4, from the window steps 2 and 3 of
// every rank.
Expected ExpectedChoice(const AdaptiveOptions& o, int world) {
  const std::vector<size_t> adaptive = {0, 1, 3};
  LayerChoiceProblem p;
  p.bins = o.bins;
  double uniform_error = 0;
  int64_t uniform_bytes = 0;
  for (size_t l : adaptive) {
    std::vector<double> errors(o.candidates.size(), 0.0);
    for (int r = 0; r < world; ++r) {
      const at::Tensor sum = LayerGradient(l, r, 2) + LayerGradient(l, r, 3);
      for (size_t c = 0; c < o.candidates.size(); ++c) errors[c] += ReferenceError(o.family, sum, o.candidates[c]);
    }
    std::vector<int64_t> bytes;
    for (size_t c = 0; c < o.candidates.size(); ++c) {
      errors[c] /= world;
      bytes.push_back(ReferenceBytes(o.family, kLayers[l].shape, o.candidates[c]));
      if (o.candidates[c] == o.default_value) {
        uniform_error += errors[c];
        uniform_bytes += bytes.back();
      }
    }
    p.errors.push_back(errors);
    p.bytes.push_back(bytes);
  }
  p.budget = o.alpha * uniform_error;
  // Brute force over every combination.
  std::optional<int64_t> best;
  const size_t C = o.candidates.size();
  for (size_t i = 0; i < C * C * C; ++i) {
    const size_t pick[3] = {i % C, i / C % C, i / C / C};
    int64_t bytes = 0, bins = 0;
    for (int l = 0; l < 3; ++l) {
      bytes += p.bytes[l][pick[l]];
      bins += ErrorBins(p.errors[l][pick[l]], p.budget, p.bins);
    }
    if (bins <= p.bins && (!best || bytes < *best)) best = bytes;
  }
  // The hook keeps the uniform default when nothing fits, or when it fits
  // the real budget (alpha >= 1) and costs no more.
  Expected out;
  out.budget = p.budget;
  out.bytes = (!best || (o.alpha >= 1 && uniform_bytes <= *best)) ? uniform_bytes : *best;
  return out;
}

std::string UniformChoices(const AdaptiveOptions& o) {
  const std::string v = absl::StrCat(o.default_value);
  return absl::StrCat("a=", v, ";b=", v, ";c=plain;d=", v);
}

at::Tensor StateEntry(const HookState& state, const std::string& name) {
  for (const auto& [n, t] : state) {
    if (n == name) return t;
  }
  return {};
}

class AdaptiveHookTest : public ::testing::TestWithParam<AdaptiveFamily> {};

TEST_P(AdaptiveHookTest, ChoosesTheBruteForceOptimumOnEveryRank) {
  auto pg = testing::Pg();
  const int rank = pg->Rank(), world = pg->Size();
  for (double alpha : {1.0, 1.5}) {
    AdaptiveOptions o = Options(GetParam());
    o.alpha = alpha;
    std::vector<std::string> changes;
    o.on_change = [&](int64_t step, const std::string& s) { changes.push_back(std::to_string(step) + ": " + s); };
    AdaptiveHook hook(pg, o);
    for (int step = 1; step <= 3; ++step) {
      Bucket bucket(rank, step);
      hook.RunHook(bucket.b)->Wait();
    }
    EXPECT_EQ(hook.ChoicesString(), UniformChoices(o));
    // The decision: at the start of step 4, before its exchange.
    const HookState before = hook.StateDict();
    Bucket bucket(rank, 4);
    const at::Tensor g4 = bucket.b.gradients[0].reshape({-1}).clone();
    hook.RunHook(bucket.b)->Wait();
    EXPECT_EQ(hook.decisions(), 1);
    const Expected expected = ExpectedChoice(o, world);
    int64_t bytes = 0;
    double error = 0;
    for (const char* name : {"a", "b", "d"}) {
      const auto& layer = hook.layers().at(name);
      ASSERT_TRUE(layer.value.has_value()) << name;
      bytes += layer.bytes;
      error += layer.error;
    }
    // Ties in size may pick other members; the size must be the optimum.
    const std::string what = absl::StrCat(ToString(GetParam()), " alpha ", alpha, ": ", hook.ChoicesString());
    EXPECT_EQ(bytes, expected.bytes) << what;
    EXPECT_LE(error, expected.budget * (1 + 1e-9)) << what;
    EXPECT_FALSE(changes.empty()) << what;  // these instances are built so that adapting pays
    EXPECT_FALSE(hook.layers().at("c").value.has_value());  // 1-D: plain

    // Every rank chose the same.
    const std::string mine = hook.ChoicesString();
    at::Tensor len = torch::tensor({static_cast<int64_t>(mine.size())});
    at::Tensor lens = torch::empty({world}, torch::kLong);
    pg->AllGather(lens, len)->Wait();
    for (int r = 0; r < world; ++r) ASSERT_EQ(lens[r].item<int64_t>(), len.item<int64_t>()) << "rank " << r;
    at::Tensor mine_bytes = torch::from_blob(const_cast<char*>(mine.data()), {len.item<int64_t>()}, torch::kByte).clone();
    at::Tensor all = torch::empty({world * len.item<int64_t>()}, torch::kByte);
    pg->AllGather(all, mine_bytes)->Wait();
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(torch::equal(all.narrow(0, r * len.item<int64_t>(), len.item<int64_t>()), mine_bytes)) << r;
    }

    // Top-k: layer a's residual was carried over the change: step 4 sent
    // top-k(g4 + e3) at the new density and kept the rest.
    if (GetParam() == AdaptiveFamily::kTopK) {
      const at::Tensor e3 = StateEntry(before, "a/e");
      const at::Tensor e4 = StateEntry(hook.StateDict(), "a/e");
      ASSERT_TRUE(e3.defined() && e4.defined());
      const at::Tensor x = g4 + e3;
      const int64_t k = static_cast<int64_t>(std::ceil(*hook.layers().at("a").value * x.numel()));
      const at::Tensor kth = std::get<0>(x.abs().topk(k)).min();
      EXPECT_TRUE(torch::equal(e4, torch::where(x.abs() >= kth, torch::zeros_like(x), x)));
    }
  }
}

// MakeCommHook's text form takes the decision callback as the name-and-
// settings form does: the same decisions reach it.
TEST(AdaptiveHookRegistry, TextFormTakesTheCallback) {
  auto pg = testing::Pg();
  const int rank = pg->Rank();
  std::vector<std::string> from_text, from_settings;
  auto text = MakeCommHook(pg, "adaptive_topk:density=0.05,adapt_period=3,adapt_window=2,min_compress_numel=100",
                           [&](int64_t step, const std::string& s) { from_text.push_back(absl::StrCat(step, ": ", s)); });
  auto settings = MakeCommHook(
      pg, "adaptive_topk",
      HookSettings{{"density", "0.05"}, {"adapt_period", "3"}, {"adapt_window", "2"}, {"min_compress_numel", "100"}},
      [&](int64_t step, const std::string& s) { from_settings.push_back(absl::StrCat(step, ": ", s)); });
  for (int step = 1; step <= 7; ++step) {
    Bucket a(rank, step), b(rank, step);
    text->RunHook(a.b)->Wait();
    settings->RunHook(b.b)->Wait();
  }
  EXPECT_FALSE(from_settings.empty()) << "these layers are built so that adapting pays";
  EXPECT_EQ(from_text, from_settings);
}

// A state dict restores the choices and the half-summed window: a restored
// hook continues bit for bit like the original, through the next decision.
TEST_P(AdaptiveHookTest, CheckpointRestoresTheChoices) {
  auto pg = testing::Pg();
  const int rank = pg->Rank();
  AdaptiveOptions o = Options(GetParam());
  o.alpha = 1.5;
  // Saved after step 5 (mid-window) and after step 6, when the first step
  // after the restore (7) decides before the restored hook has seen a bucket.
  for (const int saved_after : {5, 6}) {
    SCOPED_TRACE("saved after step " + std::to_string(saved_after));
    AdaptiveHook a(pg, o);
    for (int step = 1; step <= saved_after; ++step) {
      Bucket bucket(rank, step);
      a.RunHook(bucket.b)->Wait();
    }
    const HookState state = a.StateDict();
    EXPECT_TRUE(StateEntry(state, "lgreco/sum/a").defined());  // steps 5 and 6 are in the second window
    AdaptiveHook b(pg, o);
    b.LoadStateDict(state);
    // Saved again at once, the state is the same, entry for entry and bit for bit.
    std::map<std::string, at::Tensor> saved, again;
    for (const auto& [name, t] : state) saved[name] = t;
    for (const auto& [name, t] : b.StateDict()) again[name] = t;
    ASSERT_EQ(saved.size(), again.size());
    for (const auto& [name, t] : saved) {
      ASSERT_TRUE(again.count(name)) << name;
      EXPECT_TRUE(torch::equal(t, again[name])) << name;
    }
    for (int step = saved_after + 1; step <= 8; ++step) {  // the second decision is at step 7
      Bucket ba(rank, step), bb(rank, step);
      auto wa = a.RunHook(ba.b);
      wa->Wait();
      auto wb = b.RunHook(bb.b);
      wb->Wait();
      const at::Tensor ra = wa->Result()[0];
      const at::Tensor rb = wb->Result()[0];
      EXPECT_TRUE(torch::equal(ra, rb)) << "step " << step;
      EXPECT_EQ(a.ChoicesString(), b.ChoicesString()) << "step " << step;
    }
    EXPECT_EQ(a.decisions(), 2);
    EXPECT_EQ(b.decisions(), 2);
  }
}

// A saved parameter shape that is not this model's is refused, naming it.
TEST_P(AdaptiveHookTest, RestoredShapeMismatchIsRefused) {
  auto pg = testing::Pg();
  AdaptiveOptions o = Options(GetParam());
  AdaptiveHook a(pg, o);
  Bucket bucket(pg->Rank(), 1);
  a.RunHook(bucket.b)->Wait();
  HookState state = a.StateDict();
  for (auto& [name, t] : state) {
    if (name == "lgreco/shape/a") t = at::tensor(std::vector<int64_t>{3, 1000}, at::kLong);
  }
  AdaptiveHook b(pg, o);
  Bucket seen(pg->Rank(), 1);
  b.RunHook(seen.b)->Wait();
  testing::ExpectError([&] { b.LoadStateDict(state); }, "parameter 'a' was saved with shape [3, 1000]");
  for (auto& [name, t] : state) {
    if (name == "lgreco/shape/a") t = at::tensor({1.5});
  }
  AdaptiveHook c(pg, o);
  testing::ExpectError([&] { c.LoadStateDict(state); }, "entry 'lgreco/shape/a' must be a 1-D int64 shape");
}

// Ranks restored from different checkpoints disagree on the choices: the
// first step says so on every rank instead of exchanging garbage.
TEST_P(AdaptiveHookTest, DifferentRestoredChoicesAreCaught) {
  auto pg = testing::Pg();
  if (pg->Size() < 2) GTEST_SKIP() << "needs ranks";
  AdaptiveOptions o = Options(GetParam());
  AdaptiveHook a(pg, o);
  Bucket first(pg->Rank(), 1);
  a.RunHook(first.b)->Wait();
  HookState state = a.StateDict();
  if (pg->Rank() == 1) {
    for (auto& [name, t] : state) {
      if (name == "lgreco/value/a") t = torch::tensor(o.candidates.front(), torch::kDouble);
    }
  }
  AdaptiveHook b(pg, o);
  b.LoadStateDict(state);
  Bucket second(pg->Rank(), 2);
  try {
    b.RunHook(second.b)->Wait();
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 restored other per-layer choices"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Families, AdaptiveHookTest,
                         ::testing::Values(AdaptiveFamily::kTopK, AdaptiveFamily::kQsgd, AdaptiveFamily::kPowerSgd),
                         [](const auto& info) { return ToString(info.param); });

}  // namespace
}  // namespace lowbit::compress
