// Each compressed exchange on P real ranks against the same formula computed
// in one process: every rank simulates all P ranks' gradients, compressors and
// error feedback, and checks that the hook returned exactly that (bit for bit
// where the sum order is fixed: the all-gather and two-phase exchanges decode
// and sum in rank order; MPI chooses the order of an allreduce sum).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/compeft.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/kernels/internal/counter_rng.h"
#include "tests/common/test_env.h"

namespace lowbit::compress {
using namespace ::lowbit::comm;  // process groups, DDP and the hook interface

namespace {

using kernels::MixKey;

const std::vector<std::string> kNames = {"w1", "bias", "w2"};
const std::vector<int64_t> kOffsets = {0, 1920, 1960};
const std::vector<int64_t> kNumel = {1920, 40, 1600};
constexpr int64_t kTotal = 3560;
constexpr uint64_t kSeed = 5;

at::Tensor Gradient(int rank, int step) {
  at::Generator gen = at::detail::createCPUGenerator(1000 * step + rank);
  return at::randn({kTotal}, gen);
}

GradBucket MakeBucket() {
  GradBucket b;
  b.buffer = torch::zeros({kTotal});
  b.parameter_names = kNames;
  b.offsets = kOffsets;
  b.gradients = {b.buffer.narrow(0, 0, 1920).view({48, 40}), b.buffer.narrow(0, 1920, 40),
                 b.buffer.narrow(0, 1960, 1600).view({32, 50})};
  return b;
}

// The hook's key schedule (CompressionHook::Context).
EncodeContext Ctx(int rank, const std::string& tensor, uint64_t phase, int64_t step) {
  const uint64_t base = MixKey(MixKey(kSeed, static_cast<uint64_t>(step)), NameKey(tensor));
  EncodeContext c;
  c.step = step;
  c.key = MixKey(MixKey(base, static_cast<uint64_t>(rank) + 1), phase);
  c.shared_key = MixKey(base, phase);
  return c;
}

// Classic error feedback, simulated for P ranks.
struct Reference {
  std::shared_ptr<Compressor> c;
  Exchange exchange;
  int world;
  std::vector<std::map<std::string, at::Tensor>> e;  // per rank, per tensor
  at::Tensor server_error;                            // two-phase: all chunks

  Reference(std::shared_ptr<Compressor> compressor, Exchange x, int p) : c(std::move(compressor)), exchange(x), world(p) {
    e.resize(p);
    for (auto& m : e) {
      m["w1"] = torch::zeros({1920});
      m["w2"] = torch::zeros({1600});
    }
  }

  at::Tensor Decode(const at::Tensor& msg, const EncodeContext& ctx, int64_t n) {
    at::Tensor y = torch::empty({n});
    c->Decode(msg, ctx, y, false);
    return y;
  }

  // The averaged bucket for step `step` (1-based, as the hook counts).
  at::Tensor Step(int step) {
    std::vector<at::Tensor> grads;
    for (int r = 0; r < world; ++r) grads.push_back(Gradient(r, step));
    at::Tensor out = torch::zeros({kTotal});
    // The bias: a plain mean.
    at::Tensor bias = torch::zeros({40});
    for (int r = 0; r < world; ++r) bias += grads[r].narrow(0, 1920, 40);
    out.narrow(0, 1920, 40).copy_(bias / world);
    std::map<std::string, std::vector<at::Tensor>> x;  // per tensor, per rank
    for (int r = 0; r < world; ++r) {
      for (auto [name, offset, n] : {std::tuple{"w1", 0, 1920}, std::tuple{"w2", 1960, 1600}}) {
        x[name].push_back(grads[r].narrow(0, offset, n) + e[r][name]);
      }
    }
    if (exchange == Exchange::kAllGather) {
      for (auto [name, offset, n] : {std::tuple{"w1", 0, 1920}, std::tuple{"w2", 1960, 1600}}) {
        at::Tensor mean = torch::zeros({n});
        for (int r = 0; r < world; ++r) {
          at::Tensor msg = c->Encode(x[name][r], Ctx(r, name, 0, step));
          at::Tensor d = Decode(msg, Ctx(r, name, 0, step), n);
          e[r][name] = x[name][r] - d;
          c->Decode(msg, Ctx(r, name, 0, step), mean, true);
        }
        out.narrow(0, offset, n).copy_(mean.div_(world));
      }
    } else if (exchange == Exchange::kTwoPhase) {
      const int64_t chunk = ((3520 + world - 1) / world + 7) / 8 * 8;
      if (!server_error.defined()) server_error = torch::zeros({chunk * world});
      std::vector<at::Tensor> padded;
      for (int r = 0; r < world; ++r) {
        at::Tensor p = torch::zeros({chunk * world});
        p.narrow(0, 0, 1920).copy_(x["w1"][r]);
        p.narrow(0, 1920, 1600).copy_(x["w2"][r]);
        padded.push_back(p);
      }
      at::Tensor mean = torch::empty({chunk * world});
      std::vector<at::Tensor> sent(world);
      for (int r = 0; r < world; ++r) sent[r] = torch::empty({chunk * world});
      for (int j = 0; j < world; ++j) {
        at::Tensor avg = torch::zeros({chunk});
        for (int r = 0; r < world; ++r) {
          const EncodeContext ctx = Ctx(r, "bucket:w1", 1 + j, step);
          at::Tensor msg = c->Encode(padded[r].narrow(0, j * chunk, chunk), ctx);
          sent[r].narrow(0, j * chunk, chunk).copy_(Decode(msg, ctx, chunk));
          c->Decode(msg, ctx, avg, true);
        }
        avg.div_(world);
        avg.add_(server_error.narrow(0, j * chunk, chunk));
        const EncodeContext server_ctx = Ctx(j, "bucket:w1", 0, step);
        at::Tensor z = c->Encode(avg, server_ctx);
        at::Tensor dz = Decode(z, server_ctx, chunk);
        server_error.narrow(0, j * chunk, chunk).copy_(avg - dz);
        mean.narrow(0, j * chunk, chunk).copy_(dz);
      }
      for (int r = 0; r < world; ++r) {
        e[r]["w1"] = x["w1"][r] - sent[r].narrow(0, 0, 1920);
        e[r]["w2"] = x["w2"][r] - sent[r].narrow(0, 1920, 1600);
      }
      out.narrow(0, 0, 1920).copy_(mean.narrow(0, 0, 1920));
      out.narrow(0, 1960, 1600).copy_(mean.narrow(0, 1920, 1600));
    } else {
      for (auto [name, offset, n] : {std::tuple{"w1", 0, 1920}, std::tuple{"w2", 1960, 1600}}) {
        at::Tensor sum;
        for (int r = 0; r < world; ++r) {
          at::Tensor msg = c->Encode(x[name][r] / world, Ctx(r, name, 0, step));
          e[r][name] = x[name][r] - Decode(msg, Ctx(r, name, 0, step), n) * world;
          sum = sum.defined() ? sum + msg : msg;
        }
        out.narrow(0, offset, n).copy_(Decode(sum, Ctx(0, name, 0, step), n));
      }
    }
    return out;
  }
};

struct Case {
  std::string label;
  std::shared_ptr<Compressor> compressor;
  Exchange exchange;
  bool exact;
  // Otherwise: the allowed difference from summing in another order (fp16
  // sums round to 11 bits, so a different order moves a few ulps).
  double atol = 1e-6;
};

std::vector<Case> Cases() {
  TopKOptions topk;
  topk.density = 0.05;
  return {
      {"onebit/twophase", MakeSignCompressor(), Exchange::kTwoPhase, true},
      {"onebit64/allgather", MakeSignCompressor(64), Exchange::kAllGather, true},
      {"onebit2048/twophase", MakeSignCompressor(2048), Exchange::kTwoPhase, true},
      {"qsgd4/twophase", MakeQsgdCompressor(4, 128), Exchange::kTwoPhase, true},
      {"qsgd3/allgather", MakeQsgdCompressor(3, 100), Exchange::kAllGather, true},
      {"ternary/twophase", MakeTernaryCompressor(256), Exchange::kTwoPhase, true},
      {"topk/allgather", MakeTopKCompressor(topk), Exchange::kAllGather, true},
      {"compeft/allgather", MakeComPeftCompressor({0.05, 1.5}), Exchange::kAllGather, true},
      {"randomk/allreduce", MakeRandomKCompressor(0.1), Exchange::kAllReduce, false},
      {"fp16/allreduce", MakeCastCompressor(at::kHalf), Exchange::kAllReduce, false, 4e-3},
  };
}

TEST(CompressedExchange, EqualsTheFormulaInOneProcess) {
  auto pg = testing::Pg();
  const int world = pg->Size();
  for (const Case& c : Cases()) {
    CompressionHookOptions o;
    o.compressor = c.compressor;
    o.exchange = c.exchange;
    o.seed = kSeed;
    CompressionHook hook(pg, o);
    Reference ref(c.compressor, c.exchange, world);
    GradBucket bucket = MakeBucket();
    for (int step = 1; step <= 3; ++step) {
      bucket.buffer.copy_(Gradient(pg->Rank(), step));
      hook.RunHook(bucket)->Wait();
      const at::Tensor want = ref.Step(step);
      // The bias is a plain MPI sum, exact only for two ranks' order-free sum.
      const bool exact = c.exact && world <= 2;
      at::Tensor got_w = torch::cat({bucket.buffer.narrow(0, 0, 1920), bucket.buffer.narrow(0, 1960, 1600)});
      at::Tensor want_w = torch::cat({want.narrow(0, 0, 1920), want.narrow(0, 1960, 1600)});
      if (c.exact) {
        EXPECT_TRUE(torch::equal(got_w, want_w))
            << c.label << " step " << step << " max diff " << (got_w - want_w).abs().max().item<float>();
      } else {
        EXPECT_TRUE(torch::allclose(got_w, want_w, 1e-5, c.atol))
            << c.label << " step " << step << " max diff " << (got_w - want_w).abs().max().item<float>();
      }
      at::Tensor got_b = bucket.buffer.narrow(0, 1920, 40), want_b = want.narrow(0, 1920, 40);
      if (exact) {
        EXPECT_TRUE(torch::equal(got_b, want_b)) << c.label;
      } else {
        EXPECT_TRUE(torch::allclose(got_b, want_b, 1e-5, 1e-6)) << c.label;
      }
    }
  }
}

TEST(CompressedExchange, TwoPhaseSendsAboutTwoNOverP) {
  auto pg = testing::Pg();
  if (pg->Size() < 2) GTEST_SKIP() << "needs ranks";
  CompressionHookOptions o;
  o.compressor = MakeSignCompressor();
  o.exchange = Exchange::kTwoPhase;
  CompressionHook hook(pg, o);
  GradBucket bucket = MakeBucket();
  bucket.buffer.copy_(Gradient(pg->Rank(), 1));
  const int64_t before = pg->Traffic().bytes_sent;
  hook.RunHook(bucket)->Wait();
  const int64_t sent = pg->Traffic().bytes_sent - before;
  // 3520 compressed elements: (P - 1) chunks of ~3520/(8P) bytes out in the
  // all-to-all and one chunk in the all-gather, plus the bias and the flag.
  const int64_t chunk_bytes = 4 + ((3520 + pg->Size() - 1) / pg->Size() + 7) / 8;
  EXPECT_EQ(sent, chunk_bytes * (pg->Size() - 1) + chunk_bytes + 41 * 4);
}

TEST(CompressedExchange, NonFiniteOnOneRankFlagsEveryRank) {
  auto pg = testing::Pg();
  for (std::string name : {"onebit", "topk", "powersgd"}) {
    HookSettings settings = {{"start_iter", "0"}};
    if (name == "topk") settings.emplace_back("min_compress_numel", "1024");  // the test's tensors are small
    auto hook = MakeCommHook(pg, name, settings);
    GradBucket bucket = MakeBucket();
    bucket.buffer.copy_(Gradient(pg->Rank(), 1));
    hook->RunHook(bucket)->Wait();
    const HookState before = hook->StateDict();
    bucket.buffer.copy_(Gradient(pg->Rank(), 2));
    if (pg->Rank() == pg->Size() - 1) bucket.buffer[100] = std::numeric_limits<float>::quiet_NaN();
    auto work = hook->RunHook(bucket);
    work->Wait();
    EXPECT_EQ(work->Result().at(1).item<int>(), 1) << name;
    EXPECT_TRUE(bucket.buffer.isnan().all().item<bool>()) << name;
    const HookState after = hook->StateDict();
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i].first != "meta/step") EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << name;
    }
  }
}

// plain=fp16: the tensors sent uncompressed (here the 40-element bias) are the
// mean of every rank's fp16 x / P, the compressed ones are untouched, the
// dense part costs half the bytes, and a NaN on one rank still flags all.
TEST(CompressedExchange, PlainFp16SendsTheDenseTensorsAsHalves) {
  auto pg = testing::Pg();
  const int world = pg->Size();
  auto fp32 = MakeCommHook(pg, "topk", {{"min_compress_numel", "1024"}, {"seed", "5"}});
  auto fp16 = MakeCommHook(pg, "topk", {{"min_compress_numel", "1024"}, {"seed", "5"}, {"plain", "fp16"}});
  EXPECT_NE(fp16->Config().find(",plain=fp16"), std::string::npos) << fp16->Config();
  EXPECT_EQ(fp32->Config().find("plain"), std::string::npos) << fp32->Config();
  for (int step = 1; step <= 2; ++step) {
    GradBucket a = MakeBucket(), b = MakeBucket();
    a.buffer.copy_(Gradient(pg->Rank(), step));
    b.buffer.copy_(Gradient(pg->Rank(), step));
    int64_t before = pg->Traffic().bytes_sent;
    fp32->RunHook(a)->Wait();
    const int64_t sent32 = pg->Traffic().bytes_sent - before;
    before = pg->Traffic().bytes_sent;
    fp16->RunHook(b)->Wait();
    const int64_t sent16 = pg->Traffic().bytes_sent - before;
    // The bias and the non-finite flag: 41 x 2 bytes instead of 41 x 4; the top-k messages are the same.
    if (world > 1) EXPECT_EQ(sent32 - sent16, 41 * 2) << step;
    EXPECT_TRUE(torch::equal(a.buffer.narrow(0, 0, 1920), b.buffer.narrow(0, 0, 1920))) << step;
    EXPECT_TRUE(torch::equal(a.buffer.narrow(0, 1960, 1600), b.buffer.narrow(0, 1960, 1600))) << step;
    at::Tensor want = at::zeros({40}, at::kHalf);
    for (int r = 0; r < world; ++r) want.add_((Gradient(r, step).narrow(0, 1920, 40) / world).to(at::kHalf));
    const at::Tensor got = b.buffer.narrow(0, 1920, 40);
    // MPI's sum order is its own: exact for two ranks, within fp16 rounding for more.
    if (world <= 2) {
      EXPECT_TRUE(torch::equal(got, want.to(at::kFloat))) << step;
    } else {
      EXPECT_TRUE(torch::allclose(got, want.to(at::kFloat), 0, 4e-3)) << step;
    }
    EXPECT_FALSE(torch::equal(got, a.buffer.narrow(0, 1920, 40))) << "fp16 rounding must show, step " << step;
  }
  GradBucket c = MakeBucket();
  c.buffer.copy_(Gradient(pg->Rank(), 3));
  if (pg->Rank() == world - 1) c.buffer[1930] = std::numeric_limits<float>::quiet_NaN();
  auto work = fp16->RunHook(c);
  work->Wait();
  EXPECT_EQ(work->Result().at(1).item<int>(), 1);
  EXPECT_TRUE(c.buffer.isnan().all().item<bool>());
}

// Through DDP: a NaN loss on the last rank marks the step non-finite on every
// rank, and the next step is clean again.
TEST(CompressedExchange, DdpFlagsANonFiniteStepOnEveryRank) {
  auto pg = testing::Pg();
  torch::manual_seed(0);
  auto model = std::make_shared<torch::nn::LinearImpl>(64, 32);
  DistributedDataParallel ddp(model, pg);
  ddp.RegisterCommHook(MakeCommHook(pg, "onebit:min_compress_numel=16"));
  for (int step = 0; step < 3; ++step) {
    model->zero_grad();
    at::Tensor x = torch::randn({8, 64});
    if (step == 1 && pg->Rank() == pg->Size() - 1) x[0][0] = std::numeric_limits<float>::infinity() * 0;
    model->forward(x).pow(2).sum().backward();
    EXPECT_EQ(ddp.LastStepStats().nonfinite, step == 1) << "step " << step;
    EXPECT_EQ(model->weight.grad().isfinite().all().item<bool>(), step != 1) << "step " << step;
  }
}

// Buckets handed over one after another, waited for only at the end (as DDP
// does), with encoding on the hook's thread: the same bits as on the calling
// thread, step after step, for each exchange (the two-phase continuation
// issues a collective of its own, which must not race the worker's).
TEST(CompressedExchange, EncodingOffTheCallingThreadGivesTheSameBits) {
  auto pg = testing::Pg();
  struct Setup {
    std::string label;
    std::shared_ptr<Compressor> compressor;
    Exchange exchange;
  };
  const std::vector<Setup> setups = {{"onebit/twophase", MakeSignCompressor(), Exchange::kTwoPhase},
                                     {"qsgd4/allgather", MakeQsgdCompressor(4, 128), Exchange::kAllGather},
                                     {"qsgd4/twophase", MakeQsgdCompressor(4, 128), Exchange::kTwoPhase},
                                     {"fp16/allreduce", MakeCastCompressor(at::kHalf), Exchange::kAllReduce}};
  for (const Setup& setup : setups) {
    std::vector<at::Tensor> results[2];
    for (bool overlap : {false, true}) {
      CompressionHookOptions o;
      o.compressor = setup.compressor;
      o.exchange = setup.exchange;
      o.seed = kSeed;
      o.overlap = overlap;
      CompressionHook hook(pg, o);
      std::vector<GradBucket> buckets(3, GradBucket{});
      for (size_t b = 0; b < buckets.size(); ++b) {
        buckets[b] = MakeBucket();
        buckets[b].index = b;
        buckets[b].is_last = b + 1 == buckets.size();
        for (auto& name : buckets[b].parameter_names) name += "/" + std::to_string(b);
      }
      for (int step = 1; step <= 3; ++step) {
        std::vector<std::shared_ptr<Work>> works;
        for (size_t b = 0; b < buckets.size(); ++b) {
          buckets[b].buffer.copy_(Gradient(pg->Rank(), 10 * step + static_cast<int>(b)));
          works.push_back(hook.RunHook(buckets[b]));
        }
        for (auto& w : works) w->Wait();
        for (auto& b : buckets) results[overlap].push_back(b.buffer.clone());
      }
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    for (size_t i = 0; i < results[0].size(); ++i) {
      EXPECT_TRUE(torch::equal(results[0][i], results[1][i])) << setup.label << " result " << i;
      EXPECT_GT(results[0][i].abs().sum().item<double>(), 0.0) << setup.label;
    }
  }
}

// An encoder that fails on the hook's thread: the bucket's Wait() throws its
// error on every rank (one rank has no thread: RunHook throws), and the hook
// can be destroyed afterwards.
TEST(CompressedExchange, AnErrorWhileEncodingOffThreadReachesWait) {
  struct Failing final : Compressor {
    std::shared_ptr<Compressor> inner = MakeQsgdCompressor(4, 128);
    std::string Name() const override { return "failing"; }
    std::string Config() const override { return "failing"; }
    bool Supports(Exchange x) const override { return inner->Supports(x); }
    Exchange DefaultExchange() const override { return Exchange::kAllGather; }
    at::Tensor Encode(const at::Tensor&, const EncodeContext&) const override {
      TORCH_CHECK(false, "encoder failed on purpose");
    }
    void Decode(const at::Tensor& m, const EncodeContext& c, at::Tensor& out, bool acc) const override {
      inner->Decode(m, c, out, acc);
    }
    int64_t FixedMessageBytes(int64_t n) const override { return inner->FixedMessageBytes(n); }
  };
  auto pg = testing::Pg();
  CompressionHookOptions o;
  o.compressor = std::make_shared<Failing>();
  o.error_feedback = MakeErrorFeedback("none");  // the plain Encode, not the fused one
  CompressionHook hook(pg, o);
  GradBucket bucket = MakeBucket();
  bucket.buffer.copy_(Gradient(pg->Rank(), 1));
  try {  // one rank encodes on the calling thread: RunHook itself throws
    hook.RunHook(bucket)->Wait();
    FAIL() << "expected the encoder's error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("encoder failed on purpose"), std::string::npos) << e.what();
  }
}

// A hook configured differently on one rank is refused when registered.
TEST(CompressedExchange, MismatchedHookIsCaughtAtRegistration) {
  auto pg = testing::Pg();
  if (pg->Size() < 2) GTEST_SKIP() << "needs ranks";
  auto model = std::make_shared<torch::nn::LinearImpl>(8, 4);
  DistributedDataParallel ddp(model, pg);
  const std::string density = pg->Rank() == 1 ? "0.02" : "0.01";
  try {
    ddp.RegisterCommHook(MakeCommHook(pg, "topk", {{"density", density}}));
    FAIL() << "expected a mismatch error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("density=0.02"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowbit::compress
