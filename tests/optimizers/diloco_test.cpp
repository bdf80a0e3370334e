// DiLoCo on P real ranks against references computed in one process:
// - H = 1, outer lr 1, no momentum, plain SGD inside equals data-parallel SGD
//   (theta -= lr * mean gradient), within float rounding (1e-6 here, values of
//   order 1, a few roundings per step);
// - H = 3 with Nesterov outer momentum and momentum SGD inside equals P
//   torch::optim::SGD inner optimizers and a torch::optim::SGD(nesterov) outer
//   one on the mean pseudo-gradient (1e-5);
// - only every H-th step talks; a checkpoint mid-interval resumes bit for bit
//   (with a qsgd exchange whose error feedback and rounding stream must come
//   back too); a non-finite pseudo-gradient on one rank leaves every rank on
//   the last global parameters; bad settings and settings that differ across
//   ranks are refused, naming them;
// - Streaming DiLoCo: the fragments cover every parameter once, in runs of
//   about equal size; P fragments with a delay tau and merge weight alpha
//   equal a reference that runs every rank's inner SGD and one torch
//   SGD(nesterov) outer optimizer per fragment schedule in one process
//   (1e-5); a checkpoint with a fragment in flight resumes bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <sstream>

#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/optimizers/diloco.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::optim {
namespace {

using lowbit::testing::ExpectError;
using lowbit::testing::Pg;
using Tensors = std::vector<at::Tensor>;

const std::vector<std::vector<int64_t>> kShapes = {{40, 30}, {30}, {7, 40}};

Tensors InitialParams() {
  at::Generator gen = at::detail::createCPUGenerator(11);
  Tensors out;
  for (const auto& s : kShapes) out.push_back(torch::randn(s, gen).requires_grad_());
  return out;
}

// Rank r's gradient of a quadratic: g = c_r * theta + d_r (elementwise), so
// the gradient depends on where the rank's local parameters are.
at::Tensor Gradient(int rank, size_t i, const at::Tensor& theta) {
  at::Generator gen = at::detail::createCPUGenerator(100 * rank + static_cast<int64_t>(i));
  const at::Tensor c = torch::rand(theta.sizes(), gen) + 0.5;
  const at::Tensor d = torch::randn(theta.sizes(), gen);
  return c * theta.detach() + d;
}

void SetGradients(Tensors& params, int rank) {
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = Gradient(rank, i, params[i]);
}

void ExpectClose(const Tensors& a, const Tensors& b, double atol, const std::string& what) {
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 0.0, atol))
        << what << " tensor " << i << " differs by " << (a[i] - b[i]).abs().max().item<double>();
  }
}

TEST(DiLoCo, SyncEveryStepIsDataParallelSgd) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  constexpr double kLr = 0.05;
  Tensors params = InitialParams();
  torch::optim::SGD inner(params, torch::optim::SGDOptions(kLr));
  DiLoCo outer(params, Pg(), DiLoCoOptions().sync_every(1).outer_lr(1.0).outer_momentum(0.0));
  Tensors ref;
  for (const auto& p : InitialParams()) ref.push_back(p.detach().to(torch::kDouble));
  for (int step = 1; step <= 5; ++step) {
    SetGradients(params, rank);
    inner.step();
    outer.Step();
    EXPECT_TRUE(outer.LastStepStats().synced);
    for (size_t i = 0; i < ref.size(); ++i) {
      at::Tensor mean = torch::zeros_like(ref[i]);
      for (int r = 0; r < world; ++r) mean += Gradient(r, i, ref[i].to(torch::kFloat)).to(torch::kDouble);
      ref[i] -= kLr * mean / world;
    }
    Tensors got, want;
    for (size_t i = 0; i < ref.size(); ++i) {
      got.push_back(params[i].detach().to(torch::kDouble));
      want.push_back(ref[i]);
    }
    ExpectClose(got, want, 1e-6, "step " + std::to_string(step));
  }
}

TEST(DiLoCo, OuterNesterovOverInnerMomentumSgdMatchesTorch) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  constexpr int64_t kH = 3;
  const auto inner_options = torch::optim::SGDOptions(0.05).momentum(0.9);
  Tensors params = InitialParams();
  torch::optim::SGD inner(params, inner_options);
  DiLoCo outer(params, Pg(), DiLoCoOptions().sync_every(kH));  // lr 0.7, momentum 0.9, Nesterov
  // The reference: every rank's inner optimizer, and the outer one, in torch.
  Tensors global = InitialParams();
  torch::optim::SGD ref_outer(global, torch::optim::SGDOptions(0.7).momentum(0.9).nesterov(true));
  std::vector<Tensors> local(world);
  std::vector<std::unique_ptr<torch::optim::SGD>> ref_inner;
  for (int r = 0; r < world; ++r) {
    local[r] = InitialParams();
    ref_inner.push_back(std::make_unique<torch::optim::SGD>(local[r], inner_options));
  }
  for (int64_t step = 1; step <= 4 * kH; ++step) {
    SetGradients(params, rank);
    inner.step();
    outer.Step();
    EXPECT_EQ(outer.LastStepStats().synced, step % kH == 0) << step;
    for (int r = 0; r < world; ++r) {
      SetGradients(local[r], r);
      ref_inner[r]->step();
    }
    if (step % kH != 0) {
      EXPECT_EQ(outer.LastStepStats().bytes_sent, 0) << step;
      continue;
    }
    if (world > 1) EXPECT_GT(outer.LastStepStats().bytes_sent, 0);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < global.size(); ++i) {
      at::Tensor delta = torch::zeros_like(global[i]);
      for (int r = 0; r < world; ++r) delta += global[i] - local[r][i];
      global[i].mutable_grad() = delta / world;
    }
    ref_outer.step();
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < global.size(); ++i) local[r][i].copy_(global[i]);
    }
    ExpectClose(params, global, 1e-5, "sync at step " + std::to_string(step));
  }
}

// `total` steps straight, against `save_at` steps, a save of the inner and
// outer state, fresh objects restored from it (the model after DiLoCo is
// built, as Checkpoint::Restore does) and the rest: the same parameters bit
// for bit. Returns DiLoCo's archive.
std::string ExpectResumeBitForBit(const std::function<DiLoCoOptions()>& options, int64_t save_at, int64_t total) {
  const int rank = Pg()->Rank();
  auto run = [&](int64_t steps, Tensors& params, torch::optim::SGD& inner, DiLoCo& outer) {
    for (int64_t s = 0; s < steps; ++s) {
      SetGradients(params, rank);
      inner.step();
      outer.Step();
    }
  };
  const auto inner_options = torch::optim::SGDOptions(0.05).momentum(0.9);
  Tensors straight = InitialParams();
  torch::optim::SGD inner_a(straight, inner_options);
  DiLoCo outer_a(straight, Pg(), options());
  run(total, straight, inner_a, outer_a);

  std::stringstream inner_saved, outer_saved;
  Tensors first = InitialParams();
  {
    torch::optim::SGD inner(first, inner_options);
    DiLoCo outer(first, Pg(), options());
    run(save_at, first, inner, outer);
    torch::save(inner, inner_saved);
    torch::serialize::OutputArchive archive;
    outer.Save(archive);
    archive.save_to(outer_saved);
  }
  Tensors resumed = InitialParams();
  torch::optim::SGD inner(resumed, inner_options);
  DiLoCo outer(resumed, Pg(), options());
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < resumed.size(); ++i) resumed[i].copy_(first[i]);
  }
  torch::load(inner, inner_saved);
  torch::serialize::InputArchive in;
  in.load_from(outer_saved);
  outer.Load(in);
  EXPECT_EQ(outer.steps(), save_at);
  run(total - save_at, resumed, inner, outer);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(torch::equal(straight[i], resumed[i]))
        << "tensor " << i << " differs by " << (straight[i] - resumed[i]).abs().max().item<double>();
  }
  return outer_saved.str();
}

// Saved at step 4 of H = 3 (mid-interval), with a qsgd exchange whose error
// feedback and rounding stream must come back too.
TEST(DiLoCo, ResumeMidIntervalContinuesBitForBit) {
  auto options = [] {
    return DiLoCoOptions().sync_every(3).exchange_hook(compress::MakeCommHook(Pg(), "qsgd", {{"bits", "4"}}));
  };
  ExpectResumeBitForBit(options, 4, 9);
  // An archive without the hook's state is refused by a DiLoCo that has one.
  Tensors params = InitialParams();
  DiLoCo outer(params, Pg(), options());
  torch::serialize::OutputArchive plain;
  Tensors other = InitialParams();
  DiLoCo(other, Pg(), DiLoCoOptions().sync_every(3)).Save(plain);
  std::stringstream plain_saved;
  plain.save_to(plain_saved);
  torch::serialize::InputArchive plain_in;
  plain_in.load_from(plain_saved);
  ExpectError([&] { outer.Load(plain_in); }, "holds no state for it");
}

TEST(DiLoCo, NonFinitePseudoGradientKeepsTheGlobalParameters) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  Tensors params = InitialParams();
  torch::optim::SGD inner(params, torch::optim::SGDOptions(0.05));
  DiLoCo outer(params, Pg(), DiLoCoOptions().sync_every(2));
  const Tensors start = InitialParams();
  for (int step = 1; step <= 2; ++step) {
    SetGradients(params, rank);
    if (step == 2 && rank == world - 1) params[1].mutable_grad()[3] = std::nanf("");
    inner.step();
    outer.Step();
  }
  EXPECT_TRUE(outer.LastStepStats().nonfinite);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i], start[i])) << i;
}

// Under DDP, DiLoCo owns the hook: backward sends nothing and leaves each
// rank its own gradients; another hook is refused, naming DiLoCo.
TEST(DiLoCo, OwnsDdpsHook) {
  const int rank = Pg()->Rank();
  torch::manual_seed(2);
  torch::nn::Linear model(5, 3);
  torch::nn::Linear reference(5, 3);
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  DiLoCo outer(model->parameters(), ddp, DiLoCoOptions().sync_every(4));
  EXPECT_EQ(ddp.comm_hook_owner(), "DiLoCo");
  auto gen = at::detail::createCPUGenerator(rank);
  const at::Tensor x = torch::randn({8, 5}, gen);
  model->forward(x).square().sum().backward();
  EXPECT_EQ(ddp.LastStepStats().exchange_bytes_sent, 0);  // (bytes_sent has the first step's parameter broadcast)
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(model->weight);
    reference->bias.copy_(model->bias);
  }
  reference->forward(x).square().sum().backward();
  EXPECT_TRUE(torch::allclose(model->weight.grad(), reference->weight.grad()));
  ExpectError([&] { ddp.RegisterCommHook(compress::MakeCommHook(Pg(), "fp16")); },
              "the comm hook belongs to DiLoCo, which does its own exchange; registering 'fp16' would silently break "
              "it (give that exchange to DiLoCoOptions::exchange_hook instead)");
}

// Ranks whose models start differently all start from rank 0's parameters,
// and the extra state is the global copy (+ the outer momentum).
TEST(DiLoCo, StartsFromRankZerosParameters) {
  const int rank = Pg()->Rank();
  Tensors params = InitialParams();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : params) p.add_(rank);
  }
  const Tensors want = InitialParams();
  DiLoCo outer(params, Pg(), DiLoCoOptions().sync_every(2));
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i], want[i])) << "tensor " << i;
  EXPECT_EQ(outer.StateBytesPerElement(), 8);
  EXPECT_EQ(DiLoCo(params, Pg(), DiLoCoOptions().outer_momentum(0)).StateBytesPerElement(), 4);
}

// P = 1 .. n over tensors of uneven sizes: runs of consecutive tensors, each
// parameter once, none empty, none much over total / P.
TEST(StreamingDiLoCo, FragmentsCoverEveryParameterOnce) {
  const std::vector<std::vector<int64_t>> shapes = {{50, 20}, {20}, {300}, {10, 10}, {5}, {400}, {30, 3}};
  Tensors params;
  int64_t total = 0, biggest = 0;
  for (const auto& s : shapes) {
    params.push_back(torch::zeros(s));
    total += params.back().numel();
    biggest = std::max(biggest, params.back().numel());
  }
  for (int64_t p = 1; p <= static_cast<int64_t>(shapes.size()); ++p) {
    DiLoCo outer(params, Pg(), DiLoCoOptions().sync_every(8).fragments(p));
    const auto fragments = outer.Fragments();
    ASSERT_EQ(static_cast<int64_t>(fragments.size()), p);
    int64_t next = 0, largest = 0;
    for (const auto& [first, end] : fragments) {
      EXPECT_EQ(first, next) << "P=" << p;
      EXPECT_GT(end, first) << "P=" << p;
      int64_t numel = 0;
      for (int64_t i = first; i < end; ++i) numel += params[i].numel();
      largest = std::max(largest, numel);
      next = end;
    }
    EXPECT_EQ(next, static_cast<int64_t>(params.size())) << "P=" << p;
    EXPECT_EQ(outer.WorkingBytes(), 4 * largest) << "P=" << p;
    EXPECT_LE(largest, total / p + biggest) << "P=" << p;
  }
  // P = 2 on 1510 elements: {1200} and {30, 280} (1200 is nearer 755 than 1230).
  Tensors three = InitialParams();
  const auto two = DiLoCo(three, Pg(), DiLoCoOptions().sync_every(4).fragments(2)).Fragments();
  EXPECT_EQ(two, (std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 3}}));
}

// H = 6, P = 3 (one tensor each, so fragment p starts at 2 (p + 1) + 6 k),
// tau = 1, alpha = 0.25, momentum SGD inside, Nesterov outside.
TEST(StreamingDiLoCo, MatchesAReferenceSchedule) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  constexpr int64_t kH = 6, kP = 3, kTau = 1;
  constexpr double kAlpha = 0.25;
  const auto inner_options = torch::optim::SGDOptions(0.05).momentum(0.9);
  Tensors params = InitialParams();
  torch::optim::SGD inner(params, inner_options);
  DiLoCo outer(params, Pg(),
               DiLoCoOptions().sync_every(kH).fragments(kP).fragment_delay(kTau).merge_alpha(kAlpha));
  Tensors global = InitialParams();
  torch::optim::SGD ref_outer(global, torch::optim::SGDOptions(0.7).momentum(0.9).nesterov(true));
  std::vector<Tensors> local(world);
  std::vector<std::unique_ptr<torch::optim::SGD>> ref_inner;
  for (int r = 0; r < world; ++r) {
    local[r] = InitialParams();
    ref_inner.push_back(std::make_unique<torch::optim::SGD>(local[r], inner_options));
  }
  std::map<int64_t, at::Tensor> in_flight;  // fragment (= tensor) -> mean pseudo-gradient
  for (int64_t step = 1; step <= 4 * kH; ++step) {
    SetGradients(params, rank);
    inner.step();
    outer.Step();
    for (int r = 0; r < world; ++r) {
      SetGradients(local[r], r);
      ref_inner[r]->step();
    }
    torch::NoGradGuard no_grad;
    int64_t starting = -1;
    for (int64_t f = 0; f < kP; ++f) {
      if (step >= 2 * (f + 1) && (step - 2 * (f + 1)) % kH == 0) starting = f;
    }
    EXPECT_EQ(outer.LastStepStats().started, starting >= 0) << step;
    if (world > 1) EXPECT_EQ(outer.LastStepStats().bytes_sent > 0, starting >= 0) << step;
    if (starting >= 0) {
      at::Tensor delta = torch::zeros_like(global[starting]);
      for (int r = 0; r < world; ++r) delta += global[starting] - local[r][starting];
      in_flight[starting] = delta / world;
    }
    int64_t landing = -1;
    for (int64_t f = 0; f < kP; ++f) {
      if (step >= 2 * (f + 1) + kTau && (step - kTau - 2 * (f + 1)) % kH == 0) landing = f;
    }
    EXPECT_EQ(outer.LastStepStats().synced, landing >= 0) << step;
    if (landing >= 0) {
      for (size_t i = 0; i < global.size(); ++i) global[i].mutable_grad() = at::Tensor();
      global[landing].mutable_grad() = in_flight.at(landing);
      in_flight.erase(landing);
      ref_outer.step();
      for (int r = 0; r < world; ++r) local[r][landing].mul_(kAlpha).add_(global[landing], 1.0 - kAlpha);
    }
    ExpectClose(params, local[rank], 1e-5, "step " + std::to_string(step));
  }
}

// Saved at step 4 of H = 6, P = 3, tau = 1: fragment 1 started at step 4 and
// lands at 5, so the checkpoint holds it in flight (a Load whose schedule
// disagrees with the archive's in-flight entry is refused, so a Save that
// dropped it would fail here).
TEST(StreamingDiLoCo, ResumeWithAFragmentInFlightContinuesBitForBit) {
  auto options = [] {
    return DiLoCoOptions()
        .sync_every(6)
        .fragments(3)
        .fragment_delay(1)
        .merge_alpha(0.5)
        .exchange_hook(compress::MakeCommHook(Pg(), "qsgd", {{"bits", "4"}}));
  };
  std::stringstream outer_saved(ExpectResumeBitForBit(options, 4, 14));
  {
    torch::serialize::InputArchive archive;
    archive.load_from(outer_saved);
    bool in_flight = false;
    for (const auto& [name, t] : comm::ReadHookState(archive, "diloco_")) in_flight |= name == "inflight/delta";
    EXPECT_TRUE(in_flight) << "the checkpoint at step 4 should hold fragment 1 in flight";
  }
  // The same archive into a DiLoCo with another schedule is refused.
  Tensors other = InitialParams();
  DiLoCo two(other, Pg(), DiLoCoOptions().sync_every(6).fragments(2).fragment_delay(1));
  torch::serialize::InputArchive again;
  outer_saved.seekg(0);
  again.load_from(outer_saved);
  ExpectError([&] { two.Load(again); }, "saved with 3 fragments, this DiLoCo has 2");
}

TEST(DiLoCo, BadSettingsAreRefused) {
  Tensors params = InitialParams();
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(0)); }, "sync_every must be >= 1, got 0");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().outer_lr(-1)); }, "outer_lr must be > 0, got -1");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().outer_momentum(1)); },
              "outer_momentum must be in [0, 1), got 1");
  ExpectError([&] { DiLoCo({torch::zeros({3}, torch::kDouble)}, Pg()); }, "parameter 0 must be a dense float32");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().fragments(4)); },
              "fragments must be in [1, 3] (the number of parameter tensors), got 4");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().fragments(0)); }, "fragments must be in [1, 3]");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(2).fragments(3)); },
              "fragments (3) must be <= sync_every (2)");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(10).fragments(3).fragment_delay(3)); },
              "fragment_delay must be in [0, sync_every / fragments) = [0, 3)");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().merge_alpha(1.5)); }, "merge_alpha must be in [0, 1], got 1.5");
  if (Pg()->Size() > 1) {
    ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(Pg()->Rank() == 1 ? 7 : 5)); },
                "sync_every=7");
  }
}

}  // namespace
}  // namespace lowbit::optim
