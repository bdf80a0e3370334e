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
//   ranks are refused, naming them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
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

// Inner and outer state saved at step 4 of H = 3 (mid-interval) and loaded
// into fresh objects continues exactly as the uninterrupted run.
TEST(DiLoCo, ResumeMidIntervalContinuesBitForBit) {
  const int rank = Pg()->Rank();
  auto hook = [] { return compress::MakeCommHook(Pg(), "qsgd", {{"bits", "4"}}); };
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
  DiLoCo outer_a(straight, Pg(), DiLoCoOptions().sync_every(3).exchange_hook(hook()));
  run(9, straight, inner_a, outer_a);

  std::stringstream inner_saved;
  torch::serialize::OutputArchive archive;
  Tensors first = InitialParams();
  {
    torch::optim::SGD inner(first, inner_options);
    DiLoCo outer(first, Pg(), DiLoCoOptions().sync_every(3).exchange_hook(hook()));
    run(4, first, inner, outer);
    torch::save(inner, inner_saved);
    outer.Save(archive);
  }
  std::stringstream outer_saved;
  archive.save_to(outer_saved);
  Tensors resumed = InitialParams();
  torch::optim::SGD inner(resumed, inner_options);
  DiLoCo outer(resumed, Pg(), DiLoCoOptions().sync_every(3).exchange_hook(hook()));
  {  // the model's own restore, after DiLoCo is built (it takes rank 0's parameters)
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < resumed.size(); ++i) resumed[i].copy_(first[i]);
  }
  torch::load(inner, inner_saved);
  torch::serialize::InputArchive in;
  in.load_from(outer_saved);
  outer.Load(in);
  EXPECT_EQ(outer.steps(), 4);
  run(5, resumed, inner, outer);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(torch::equal(straight[i], resumed[i]))
        << "tensor " << i << " differs by " << (straight[i] - resumed[i]).abs().max().item<double>();
  }
  // An archive without the hook's state is refused by a DiLoCo that has one.
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
  EXPECT_EQ(ddp.LastStepStats().bytes_sent, 0);
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(model->weight);
    reference->bias.copy_(model->bias);
  }
  reference->forward(x).square().sum().backward();
  EXPECT_TRUE(torch::allclose(model->weight.grad(), reference->weight.grad()));
  ExpectError([&] { ddp.RegisterCommHook(compress::MakeCommHook(Pg(), "fp16")); },
              "the comm hook belongs to DiLoCo, which does its own exchange");
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

TEST(DiLoCo, BadSettingsAreRefused) {
  Tensors params = InitialParams();
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(0)); }, "sync_every must be >= 1, got 0");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().outer_lr(-1)); }, "outer_lr must be > 0, got -1");
  ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().outer_momentum(1)); },
              "outer_momentum must be in [0, 1), got 1");
  ExpectError([&] { DiLoCo({torch::zeros({3}, torch::kDouble)}, Pg()); }, "parameter 0 must be a dense float32");
  if (Pg()->Size() > 1) {
    ExpectError([&] { DiLoCo(params, Pg(), DiLoCoOptions().sync_every(Pg()->Rank() == 1 ? 7 : 5)); },
                "sync_every=7");
  }
}

}  // namespace
}  // namespace lowbit::optim
