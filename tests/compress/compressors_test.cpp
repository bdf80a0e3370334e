// Compressors, error feedback and the hooks in one process, against the math.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/registry.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/compress/powersgd_hook.h"
#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::compress {
using namespace ::lowbit::comm;  // process groups, DDP and the hook interface

namespace {

EncodeContext Ctx(uint64_t key) {
  EncodeContext c;
  c.key = key;
  c.shared_key = key ^ 0x5555;
  return c;
}

at::Tensor RoundTrip(const Compressor& c, const at::Tensor& x, uint64_t key = 1) {
  at::Tensor y = torch::empty_like(x);
  c.Decode(c.Encode(x, Ctx(key)), Ctx(key), y, /*accumulate=*/false);
  return y;
}

TEST(Compressors, CastsAreCasts) {
  at::Tensor x = torch::randn({1000}) * 100;
  EXPECT_TRUE(torch::equal(RoundTrip(*MakeCastCompressor(at::kHalf), x), x.to(torch::kHalf).to(torch::kFloat)));
  EXPECT_TRUE(
      torch::equal(RoundTrip(*MakeCastCompressor(at::kBFloat16), x), x.to(torch::kBFloat16).to(torch::kFloat)));
}

// y is exactly +-s with the sign of x (sign(0) = +1), one s for all of x,
// and s is the scale's math (summed in double here; the kernel's float sum
// in its own order may differ in the last bits).
void ExpectSignTimesScale(const at::Tensor& x, const at::Tensor& y, double want, const std::string& where) {
  const float s = y[0].abs().item<float>();
  EXPECT_TRUE(torch::equal(y, torch::where(x >= 0, torch::full_like(x, s), torch::full_like(x, -s)))) << where;
  EXPECT_NEAR(s, want, 2e-6 * want) << where;
}

TEST(Compressors, OneBitIsSignTimesScaleExactly) {
  at::Tensor x = torch::randn({1001});
  x[5] = 0.0f;
  // One scale for the message: RMS (p = 2) or mean |x| (p = 1).
  for (int p : {1, 2}) {
    auto c = MakeSignCompressor(0, p);
    const at::Tensor xd = x.to(torch::kDouble);
    const double scale = (p == 2 ? xd.pow(2).mean().sqrt() : xd.abs().mean()).item<double>();
    ExpectSignTimesScale(x, RoundTrip(*c, x), scale, "p=" + std::to_string(p));
    EXPECT_EQ(c->Encode(x, Ctx(0)).numel(), 4 + 126);
    EXPECT_EQ(c->FixedMessageBytes(1001), 4 + 126);
  }
  // Per-block scales: block b of 64 decodes to +-mean|x_b|.
  auto blocked = MakeSignCompressor(64, 1);
  at::Tensor y = RoundTrip(*blocked, x);
  for (int64_t b = 0; b * 64 < 1001; ++b) {
    at::Tensor xb = x.narrow(0, b * 64, std::min<int64_t>(64, 1001 - b * 64));
    ExpectSignTimesScale(xb, y.narrow(0, b * 64, xb.numel()), xb.to(torch::kDouble).abs().mean().item<double>(),
                         "block " + std::to_string(b));
  }
  EXPECT_EQ(blocked->FixedMessageBytes(1001), 4 * 16 + 126);
}

TEST(Compressors, TopKKeepsExactlyTheKLargest) {
  TopKOptions o;
  o.density = 0.01;
  auto c = MakeTopKCompressor(o);
  at::Tensor x = torch::randn({20000});
  at::Tensor y = RoundTrip(*c, x);
  const int64_t k = 200;
  EXPECT_EQ((y != 0).sum().item<int64_t>(), k);
  at::Tensor kth = std::get<0>(x.abs().topk(k)).min();
  EXPECT_TRUE(torch::equal(y, torch::where(x.abs() >= kth, x, torch::zeros_like(x))));
  EXPECT_EQ(c->Encode(x, Ctx(0)).numel(), 8 * k);
}

TEST(Compressors, SampledThresholdStaysNearTheDensity) {
  TopKOptions o;
  o.density = 0.01;
  o.sample_ratio = 0.01;
  auto c = MakeTopKCompressor(o);
  at::Tensor x = torch::randn({200000});
  at::Tensor y = RoundTrip(*c, x, 3);
  const int64_t kept = (y != 0).sum().item<int64_t>();
  EXPECT_GE(kept, 1000);
  EXPECT_LE(kept, 2600);
  // Whatever is kept is kept exactly, and it is the largest.
  at::Tensor mask = y != 0;
  EXPECT_TRUE(torch::equal(y.masked_select(mask), x.masked_select(mask)));
  EXPECT_GE(x.masked_select(mask).abs().min().item<float>(), x.masked_select(~mask).abs().max().item<float>());
}

TEST(Compressors, DensityWarmUp) {
  TopKOptions o;
  o.density = 0.001;
  o.warmup_steps = 100;
  EXPECT_DOUBLE_EQ(TopKDensityAt(o, 0), 0.25);
  EXPECT_NEAR(TopKDensityAt(o, 30), 0.25 * std::pow(0.004, 0.25), 1e-12);
  EXPECT_DOUBLE_EQ(TopKDensityAt(o, 100), 0.001);
}

void ExpectUnbiased(const Compressor& c, int64_t n, int trials, double max_step) {
  at::Tensor x = torch::randn({n});
  at::Tensor sum = torch::zeros({n}, torch::kDouble);
  for (int t = 0; t < trials; ++t) sum += RoundTrip(c, x, kernels::MixKey(11, t)).to(torch::kDouble);
  const double bound = 5.0 * max_step / 2.0 / std::sqrt(double(trials));
  EXPECT_LT((sum / trials - x.to(torch::kDouble)).abs().max().item<double>(), bound) << c.Config();
}

TEST(Compressors, QsgdAndTernaryAreUnbiased) {
  at::Tensor probe = torch::randn({1024});
  ExpectUnbiased(*MakeQsgdCompressor(4, 256), 1024, 300, 2.0 * 4.5 / 15);
  ExpectUnbiased(*MakeQsgdCompressor(2, 256), 1024, 300, 2.0 * 4.5 / 3);
  ExpectUnbiased(*MakeTernaryCompressor(256), 1024, 300, 4.5);
  // Ternary decodes to {-s, 0, s} per block.
  at::Tensor y = RoundTrip(*MakeTernaryCompressor(1024), probe);
  const float s = probe.abs().max().item<float>();
  EXPECT_TRUE(((y == 0) | (y == s) | (y == -s)).all().item<bool>());
}

TEST(Compressors, RandomKKeepsTheSharedSubset) {
  auto c = MakeRandomKCompressor(0.1);
  at::Tensor x = torch::randn({10000});
  at::Tensor y = RoundTrip(*c, x, 9);
  at::Tensor mask = y != 0;
  EXPECT_NEAR(mask.sum().item<int64_t>(), 1000, 150);
  EXPECT_TRUE(torch::equal(y.masked_select(mask), x.masked_select(mask)));
  EXPECT_TRUE(torch::equal(y, RoundTrip(*c, x, 9)));
}

// A bucket of two matrices and a bias, aliasing one flat buffer.
struct Bucket {
  GradBucket b;
  Bucket() {
    b.buffer = torch::zeros({48 * 40 + 40 + 32 * 50});
    b.parameter_names = {"w1", "bias", "w2"};
    b.offsets = {0, 1920, 1960};
    b.gradients = {b.buffer.narrow(0, 0, 1920).view({48, 40}), b.buffer.narrow(0, 1920, 40),
                   b.buffer.narrow(0, 1960, 1600).view({32, 50})};
  }
  std::vector<at::Tensor> Run(CommHook& hook, const at::Tensor& grad) {
    b.buffer.copy_(grad);
    auto work = hook.RunHook(b);
    work->Wait();
    last_flag = work->Result().size() > 1 ? work->Result()[1].item<int>() : 0;
    return {b.buffer.clone()};
  }
  int last_flag = 0;
};

at::Tensor StateEntry(const HookState& state, const std::string& name) {
  for (const auto& [n, t] : state) {
    if (n == name) return t;
  }
  return at::Tensor();
}

// The test buckets hold tensors of 1,600-1,920 elements; top-k sends tensors
// under 8192 elements dense by default.
HookSettings ForSmallTensors(const std::string& hook, HookSettings settings) {
  if (hook == "topk") settings.emplace_back("min_compress_numel", "1024");
  return settings;
}

// Error feedback loses nothing: everything the hook returned plus what it
// still holds (worker residuals, and the server error of the two-phase
// exchange) equals the sum of the gradients.
TEST(ErrorFeedback, SentPlusResidualIsTheSumOfGradients) {
  for (std::string name : {"onebit", "qsgd", "ternary", "onebit_twophase", "qsgd_twophase", "ternary_twophase",
                           "topk", "randomk", "fp16"}) {
    const std::string hook_name = name.substr(0, name.find('_'));
    const bool twophase = name.find("_twophase") != std::string::npos;
    HookSettings settings = {{"error_feedback", "ef"}};
    if (twophase) settings.emplace_back("exchange", "twophase");
    if (hook_name == "qsgd") settings.emplace_back("bits", "2");
    if (hook_name == "topk" || hook_name == "randomk") settings.emplace_back("density", "0.05");
    if (hook_name == "topk") {  // these tensors are small: compress them, from the first step
      settings.emplace_back("min_compress_numel", "1024");
      settings.emplace_back("warmup_steps", "0");
    }
    auto hook = MakeCommHook(std::make_shared<LocalProcessGroup>(), hook_name, settings);
    Bucket bucket;
    at::Tensor sum_grad = torch::zeros_like(bucket.b.buffer, torch::kDouble);
    at::Tensor sum_out = torch::zeros_like(sum_grad);
    for (int t = 0; t < 6; ++t) {
      at::Tensor g = torch::randn_like(bucket.b.buffer);
      sum_grad += g.to(torch::kDouble);
      sum_out += bucket.Run(*hook, g)[0].to(torch::kDouble);
    }
    const HookState state = hook->StateDict();
    at::Tensor residual = torch::zeros_like(sum_grad);
    for (auto [param, offset, numel] : {std::tuple{"w1", 0, 1920}, std::tuple{"w2", 1960, 1600}}) {
      at::Tensor e = StateEntry(state, std::string(param) + "/e");
      ASSERT_TRUE(e.defined()) << name << " " << param;
      residual.narrow(0, offset, numel) += e.to(torch::kDouble);
    }
    at::Tensor server = StateEntry(state, "bucket:w1/server_error");
    EXPECT_EQ(server.defined(), twophase) << name;
    if (server.defined()) {
      // The server error covers w1 then w2, concatenated and padded.
      residual.narrow(0, 0, 1920) += server.narrow(0, 0, 1920).to(torch::kDouble);
      residual.narrow(0, 1960, 1600) += server.narrow(0, 1920, 1600).to(torch::kDouble);
    }
    const double rel = ((sum_out + residual - sum_grad).norm() / sum_grad.norm()).item<double>();
    EXPECT_LT(rel, 1e-5) << name;
    // And compression did lose something along the way (except for nothing).
    EXPECT_GT(residual.abs().max().item<double>(), 0.0) << name;
  }
}

TEST(ErrorFeedback, Ef21AndEControlTrackTheGlobalEstimate) {
  for (std::string ef : {"ef21", "econtrol"}) {
    auto hook = MakeCommHook(std::make_shared<LocalProcessGroup>(), "topk",
                             {{"error_feedback", ef}, {"density", "0.1"}, {"min_compress_numel", "1024"}});
    Bucket bucket;
    at::Tensor g = torch::randn_like(bucket.b.buffer);
    at::Tensor out;
    // With a constant gradient, the estimate converges to it.
    for (int t = 0; t < 60; ++t) out = bucket.Run(*hook, g)[0];
    EXPECT_LT(((out - g).norm() / g.norm()).item<double>(), 0.05) << ef;
    // In a world of one, G (the global estimate) equals h (this rank's).
    const HookState state = hook->StateDict();
    EXPECT_TRUE(torch::equal(StateEntry(state, "w1/G"), StateEntry(state, "w1/h"))) << ef;
  }
}

TEST(PowerSgd, ExactOnARankRMatrix) {
  PowerSgdOptions o;
  o.rank = 3;
  o.start_iter = 0;
  PowerSgdHook hook(std::make_shared<LocalProcessGroup>(), o);
  Bucket bucket;
  torch::manual_seed(0);
  at::Tensor g = torch::randn_like(bucket.b.buffer);
  g.narrow(0, 0, 1920).copy_(torch::mm(torch::randn({48, 3}), torch::randn({3, 40})).view({-1}));
  g.narrow(0, 1960, 1600).copy_(torch::mm(torch::randn({32, 3}), torch::randn({3, 50})).view({-1}));
  at::Tensor out = bucket.Run(hook, g)[0];
  // Exact up to fp32 rounding in P = MQ, Gram-Schmidt and P Q^T.
  EXPECT_LT(((out - g).norm() / g.norm()).item<double>(), 1e-4);
  // A full-rank matrix is only approximated, and the error is remembered.
  at::Tensor h = torch::randn_like(g);
  at::Tensor approx = bucket.Run(hook, h)[0];
  EXPECT_GT(((approx - h).narrow(0, 0, 1920).norm() / h.narrow(0, 0, 1920).norm()).item<double>(), 0.1);
  EXPECT_TRUE(torch::allclose(StateEntry(hook.StateDict(), "w1/error"), (h - approx).narrow(0, 0, 1920), 1e-4,
                              1e-4));
  // The bias travels uncompressed.
  EXPECT_TRUE(torch::equal(approx.narrow(0, 1920, 40), h.narrow(0, 1920, 40)));
}

TEST(PowerSgd, PlainAllreduceBeforeStartIter) {
  PowerSgdOptions o;
  o.start_iter = 2;
  PowerSgdHook hook(std::make_shared<LocalProcessGroup>(), o);
  Bucket bucket;
  for (int t = 0; t < 2; ++t) {
    at::Tensor g = torch::randn_like(bucket.b.buffer);
    EXPECT_TRUE(torch::equal(bucket.Run(hook, g)[0], g));
  }
  at::Tensor g = torch::randn_like(bucket.b.buffer);
  EXPECT_FALSE(torch::equal(bucket.Run(hook, g)[0], g));
}

TEST(CompressionHook, UncompressedWarmUpLeavesNoState) {
  auto hook = MakeCommHook(std::make_shared<LocalProcessGroup>(), "onebit:start_iter=2");
  Bucket bucket;
  for (int t = 0; t < 2; ++t) {
    at::Tensor g = torch::randn_like(bucket.b.buffer);
    EXPECT_TRUE(torch::equal(bucket.Run(*hook, g)[0], g)) << t;
  }
  EXPECT_EQ(hook->StateDict().size(), 2u);  // meta/* only
  at::Tensor g = torch::randn_like(bucket.b.buffer);
  EXPECT_FALSE(torch::equal(bucket.Run(*hook, g)[0], g));
  EXPECT_TRUE(StateEntry(hook->StateDict(), "w1/e").defined());
}

// The state dict restores a hook exactly: a restored hook continues bit for
// bit like the original.
TEST(HookState, RestoreContinuesExactly) {
  for (std::string name : {"onebit", "qsgd", "topk", "powersgd"}) {
    auto pg = std::make_shared<LocalProcessGroup>();
    auto a = MakeCommHook(pg, name, ForSmallTensors(name, {{"start_iter", "1"}}));
    auto b = MakeCommHook(pg, name, ForSmallTensors(name, {{"start_iter", "1"}}));
    Bucket bucket;
    for (int t = 0; t < 3; ++t) bucket.Run(*a, torch::randn_like(bucket.b.buffer));
    b->LoadStateDict(a->StateDict());
    at::Tensor g = torch::randn_like(bucket.b.buffer);
    at::Tensor ra = bucket.Run(*a, g)[0];
    at::Tensor rb = bucket.Run(*b, g)[0];
    EXPECT_TRUE(torch::equal(ra, rb)) << name;
  }
}

TEST(HookState, OtherWorldSizeStartsAfresh) {
  auto hook = MakeCommHook(std::make_shared<LocalProcessGroup>(), "onebit");
  Bucket bucket;
  bucket.Run(*hook, torch::randn_like(bucket.b.buffer));
  HookState state = hook->StateDict();
  ASSERT_GT(state.size(), 2u);
  for (auto& [name, t] : state) {
    if (name == "meta/world_size") t = torch::tensor(int64_t{4});
  }
  hook->LoadStateDict(state);
  EXPECT_EQ(hook->StateDict().size(), 2u);  // only meta/*
}

// Non-finite gradients flag the step and leave the state untouched.
TEST(NonFinite, FlaggedAndStateUnchanged) {
  for (std::string name : {"onebit", "topk", "powersgd", "fp16"}) {
    HookSettings settings = {{"start_iter", "0"}};
    if (name == "fp16") settings.emplace_back("error_feedback", "ef");
    auto hook = MakeCommHook(std::make_shared<LocalProcessGroup>(), name, ForSmallTensors(name, settings));
    Bucket bucket;
    bucket.Run(*hook, torch::randn_like(bucket.b.buffer));
    const HookState before = hook->StateDict();
    at::Tensor bad = torch::randn_like(bucket.b.buffer);
    bad[7] = std::numeric_limits<float>::infinity();
    bad[2000] = std::numeric_limits<float>::quiet_NaN();
    at::Tensor out = bucket.Run(*hook, bad)[0];
    EXPECT_EQ(bucket.last_flag, 1) << name;
    EXPECT_TRUE(out.isnan().all().item<bool>()) << name;
    const HookState after = hook->StateDict();
    ASSERT_EQ(before.size(), after.size()) << name;
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i].first == "meta/step") continue;
      EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << name << " " << before[i].first;
    }
    bucket.Run(*hook, torch::randn_like(bucket.b.buffer));
    EXPECT_EQ(bucket.last_flag, 0) << name;
    EXPECT_TRUE(torch::isfinite(bucket.b.buffer).all().item<bool>()) << name;
  }
}

void ExpectError(const std::string& hook, const HookSettings& settings, const std::string& needle) {
  try {
    MakeCommHook(std::make_shared<LocalProcessGroup>(), hook, settings);
    ADD_FAILURE() << "expected an error containing: " << needle;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Every bad setting names the hook, the key and the value.
TEST(BadInput, ClearErrors) {
  ExpectError("topk", {{"density", "0"}}, "hook 'topk': setting 'density' must be in (0, 1], got 0");
  ExpectError("topk", {{"density", "1.5"}}, "hook 'topk': setting 'density' must be in (0, 1], got 1.5");
  ExpectError("randomk", {{"density", "1.5"}}, "hook 'randomk': setting 'density' must be in (0, 1], got 1.5");
  ExpectError("powersgd", {{"rank", "0"}}, "hook 'powersgd': setting 'rank' must be in [1, 1048576], got 0");
  ExpectError("qsgd", {{"bits", "9"}}, "hook 'qsgd': setting 'bits' must be in [1, 8], got 9");
  ExpectError("qsgd", {{"bits", "0"}}, "hook 'qsgd': setting 'bits' must be in [1, 8], got 0");
  ExpectError("qsgd", {{"bits", "2.5"}}, "hook 'qsgd': setting 'bits' must be an integer, got '2.5'");
  ExpectError("qsgd", {{"bits", "four"}}, "hook 'qsgd': setting 'bits' must be an integer, got 'four'");
  ExpectError("onebit", {{"error_feedback", "ef3"}},
              "hook 'onebit': setting 'error_feedback' must be one of none, ef, ef21, econtrol, got 'ef3'");
  ExpectError("onebit", {{"compress_1d", "maybe"}}, "hook 'onebit': setting 'compress_1d' must be true or false");
  ExpectError("topk", {{"exchange", "twophase"}}, "compressor topk cannot use the twophase exchange");
  ExpectError("qsgd", {{"rank", "8"}}, "hook 'qsgd' has no setting 'rank'; its settings: error_feedback, ef_eta");
  ExpectError("allreduce", {{"bits", "8"}}, "hook 'allreduce' has no setting 'bits' (it takes none)");
  ExpectError("zip", {}, "unknown comm hook 'zip'; known: allreduce, none, fp16");
  ExpectError("powersgd", {{"error_feedback", "ef21"}},
              "hook 'powersgd': setting 'error_feedback' must be one of ef, none, got 'ef21'");
}

// The registry is the one table: every hook's defaults parse and build.
TEST(Registry, DefaultsBuildEveryHookAndTextFormMatches) {
  auto pg = std::make_shared<LocalProcessGroup>();
  for (const HookInfo& hook : HookRegistry()) {
    std::shared_ptr<CommHook> built = MakeCommHook(pg, hook.name, HookSettings{});
    ASSERT_NE(built, nullptr) << hook.name;
    for (const HookSetting& s : hook.settings) EXPECT_FALSE(s.help.empty()) << hook.name << " " << s.key;
  }
  EXPECT_EQ(MakeCommHook(pg, "qsgd:bits=2,block=128")->Config(),
            MakeCommHook(pg, "qsgd", {{"bits", "2"}, {"block", "128"}})->Config());
  EXPECT_NE(MakeCommHook(pg, "qsgd:bits=2")->Config(), MakeCommHook(pg, "qsgd")->Config());
  EXPECT_EQ(FindHook("qsgd").Find("bits")->default_value, std::to_string(defaults::kQsgdBits));
  EXPECT_EQ(FindHook("powersgd").Find("start_iter")->default_value, std::to_string(defaults::kPowerSgdStartIter));
  ExpectError("qsgd", {{"bits", ""}}, "must be an integer, got ''");
}

}  // namespace
}  // namespace lowbit::compress
