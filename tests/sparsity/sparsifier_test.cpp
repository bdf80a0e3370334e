// Sparsifier: N:M groups along the input dimension keep exactly n of the
// largest magnitudes; the schedules' values; SR-STE's and PGF's gradients
// against their formulas; masked weights exactly zero after every step of
// SGD, Adam and an 8-bit optimizer; GMP reaching its target; save/load
// continuing identically; the compressed export round trip; QAT layers;
// bad configurations.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "lowbit/kernels/sparse.h"
#include "lowbit/optimizers/optim_8bit.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/nm_export.h"
#include "lowbit/sparsity/sparsifier.h"
#include "tests/common/expect_error.h"
#include "tests/common/small_cnn.h"

namespace lowbit::sparsity {
namespace {

using lowbit::testing::ExpectError;

namespace nn = torch::nn;

using Net = lowbit::testing::SmallCnn;

const std::vector<std::pair<std::string, std::optional<SparseConfig>>> kSkipConv1 = {{"conv1", std::nullopt}};

// One step of a random classification task; returns the loss.
double TrainStep(Net& net, Sparsifier& sparsifier, torch::optim::Optimizer& opt, int64_t seed) {
  torch::manual_seed(seed);
  at::Tensor x = torch::randn({16, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {16});
  opt.zero_grad();
  at::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
  loss.backward();
  sparsifier.Step(opt);
  return loss.item<double>();
}

void ExpectNm(const at::Tensor& weight, const at::Tensor& mask, int64_t n, int64_t m, const std::string& what) {
  at::Tensor rows = InputMajor(mask.to(torch::kFloat)).reshape({-1, m});
  EXPECT_TRUE(torch::equal(rows.sum(1), torch::full({rows.size(0)}, static_cast<float>(n)))) << what;
  EXPECT_TRUE(torch::equal(weight.detach().masked_select(mask.logical_not()),
                           torch::zeros({mask.numel() - mask.sum().item<int64_t>()})))
      << what << ": pruned weights are not exactly zero";
}

TEST(SparsifierTest, NmMasksRunAlongTheInputDimensionAndKeepTheLargest) {
  torch::manual_seed(1);
  Net net;
  at::Tensor conv2_before = net->named_parameters()["conv2.weight"].detach().clone();
  SparseConfig c;
  c.method = Method::kHard;
  Sparsifier s(*net, c, kSkipConv1);
  EXPECT_EQ(s.LayerNames(), (std::vector<std::string>{"conv2", "fc1", "fc2"}));
  for (const std::string& name : s.LayerNames()) ExpectNm(s.Weight(name), s.Mask(name), 2, 4, name);
  // conv2 [16, 8, 3, 3]: groups of 4 input channels at each (out, kh, kw).
  at::Tensor groups = conv2_before.permute({0, 2, 3, 1}).reshape({-1, 4});
  at::Tensor mask = s.Mask("conv2").permute({0, 2, 3, 1}).reshape({-1, 4});
  EXPECT_TRUE(torch::equal(mask, kernels::NmMask(groups.contiguous(), 2, 4)));
  // The parameter object is the module's: identity kept.
  EXPECT_TRUE(s.Weight("fc1").is_same(net->named_parameters()["fc1.weight"]));
  EXPECT_NEAR(s.MaskSparsity(), 0.5, 1e-12);
  // What ranks compare at start-up: each layer's name, shape and config.
  EXPECT_EQ(s.Settings(), (std::vector<std::string>{"conv2 [16, 8, 3, 3] 2:4-hard-every1",
                                                    "fc1 [64, 784] 2:4-hard-every1", "fc2 [10, 64] 2:4-hard-every1"}));
}

TEST(SparsifierTest, ScheduleValues) {
  SparseConfig gmp = GmpConfig(0.9, 10, 110, 10);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(gmp, 0), 0.0);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(gmp, 10), 0.0);
  EXPECT_NEAR(ScheduledSparsity(gmp, 60), 0.9 - 0.9 * 0.125, 1e-12);  // s_f + (s_0 - s_f)(1 - 1/2)^3
  EXPECT_NEAR(ScheduledSparsity(gmp, 35), 0.9 - 0.9 * 0.75 * 0.75 * 0.75, 1e-12);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(gmp, 110), 0.9);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(gmp, 500), 0.9);
  gmp.initial_sparsity = 0.5;
  EXPECT_NEAR(ScheduledSparsity(gmp, 60), 0.9 - 0.4 * 0.125, 1e-12);
  SparseConfig pgf;
  pgf.method = Method::kPgf;
  pgf.start_step = 0;
  pgf.end_step = 90;
  EXPECT_EQ(ScheduledN(pgf, 0), 4);    // dense
  EXPECT_EQ(ScheduledN(pgf, 29), 4);
  EXPECT_EQ(ScheduledN(pgf, 30), 3);
  EXPECT_EQ(ScheduledN(pgf, 60), 2);
  EXPECT_EQ(ScheduledN(pgf, 90), 2);
  EXPECT_DOUBLE_EQ(PgfBeta(pgf, 0), 1.0);
  EXPECT_DOUBLE_EQ(PgfBeta(pgf, 45), 0.5);
  EXPECT_DOUBLE_EQ(PgfBeta(pgf, 90), 0.0);
}

// SR-STE (Zhou et al. 2021, eq. 6): the dense weights get
// dL/d(W * mask) + lambda (1 - mask) W; SGD then moves them by -lr times it.
TEST(SparsifierTest, SrSteGradientIsTheFormula) {
  torch::manual_seed(2);
  nn::Sequential seq(nn::Linear(8, 6));
  auto lin = std::dynamic_pointer_cast<nn::LinearImpl>(seq.ptr()->children()[0]);
  SparseConfig c;
  c.srste_lambda = 0.25;
  Sparsifier s(*seq, c);
  const at::Tensor dense0 = s.Dense("0").clone(), mask0 = s.Mask("0").clone();
  EXPECT_TRUE(torch::equal(lin->weight.detach(), dense0 * mask0));
  at::Tensor x = torch::randn({5, 8});
  (lin->forward(x).pow(2).sum()).backward();
  const at::Tensor g_sparse = lin->weight.grad().clone();  // dL/d(W * mask)
  s.BeforeStep();
  EXPECT_TRUE(torch::allclose(lin->weight.grad(), g_sparse + 0.25 * dense0 * mask0.logical_not(), 0, 0));
  EXPECT_TRUE(torch::equal(lin->weight.detach(), dense0));
  torch::optim::SGD sgd(seq->parameters(), torch::optim::SGDOptions(0.1));
  sgd.step();
  s.AfterStep();
  const at::Tensor dense1 = dense0 - 0.1 * (g_sparse + 0.25 * dense0 * mask0.logical_not());
  EXPECT_TRUE(torch::allclose(s.Dense("0"), dense1, 1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(s.Mask("0"), kernels::NmMask(s.Dense("0"), 2, 4)));
  EXPECT_TRUE(torch::equal(lin->weight.detach(), s.Dense("0") * s.Mask("0")));
}

// PGF: forward uses W * (mask + (1 - mask) beta), the dense gradient is the
// chain rule through that factor; at the end of the schedule it is hard n:m.
TEST(SparsifierTest, ProgressiveGradientFlowDecaysToHardNm) {
  torch::manual_seed(3);
  nn::Sequential seq(nn::Linear(8, 6));
  auto lin = std::dynamic_pointer_cast<nn::LinearImpl>(seq.ptr()->children()[0]);
  SparseConfig c;
  c.method = Method::kPgf;
  c.end_step = 6;  // stages of 2 steps: 4:4, 3:4, 2:4
  Sparsifier s(*seq, c);
  torch::optim::SGD sgd(seq->parameters(), torch::optim::SGDOptions(0.05));
  for (int t = 0; t < 8; ++t) {
    const at::Tensor mask = s.Mask("0").clone(), dense = s.Dense("0").clone();
    const double beta = PgfBeta(c, t);
    const at::Tensor factor = torch::where(mask, torch::ones({}), torch::full({}, beta));
    EXPECT_TRUE(torch::allclose(lin->weight.detach(), dense * factor, 0, 0)) << t;
    EXPECT_EQ(mask.reshape({-1, 4}).sum(1).max().item<int64_t>(), ScheduledN(c, t)) << t;
    sgd.zero_grad();
    lin->forward(torch::randn({5, 8})).pow(2).sum().backward();
    const at::Tensor g = lin->weight.grad().clone();
    s.BeforeStep();
    EXPECT_TRUE(torch::allclose(lin->weight.grad(), g * factor, 0, 0)) << t;
    sgd.step();
    s.AfterStep();
  }
  ExpectNm(lin->weight, s.Mask("0"), 2, 4, "after the schedule");
}

TEST(SparsifierTest, PrunedWeightsStayExactlyZeroUnderEveryOptimizer) {
  using Factory = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)>;
  const std::vector<std::pair<std::string, Factory>> optimizers = {
      {"sgd", [](auto p) { return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.05).momentum(0.9)); }},
      {"adam", [](auto p) { return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(1e-2)); }},
      {"adamw8bit", [](auto p) {
         return std::make_unique<optim::AdamW8bit>(p, optim::AdamW8bitOptions(1e-2).weight_decay(0.1));
       }}};
  for (const auto& [name, make] : optimizers) {
    for (Method method : {Method::kHard, Method::kSrSte}) {
      torch::manual_seed(4);
      Net net;
      SparseConfig c;
      c.method = method;
      c.m = 8;
      c.n = 4;
      Sparsifier s(*net, c, kSkipConv1);
      auto opt = make(net->parameters());
      for (int step = 0; step < 6; ++step) {
        TrainStep(net, s, *opt, 10 + step);
        for (const std::string& layer : s.LayerNames()) {
          ExpectNm(s.Weight(layer), s.Mask(layer), 4, 8, name + " " + layer + " step " + std::to_string(step));
        }
      }
      EXPECT_EQ(s.step(), 6);
    }
  }
}

TEST(SparsifierTest, GradualMagnitudePruningReachesItsTarget) {
  torch::manual_seed(5);
  Net net;
  Sparsifier s(*net, GmpConfig(0.8, 2, 10, 2), kSkipConv1);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  EXPECT_DOUBLE_EQ(s.MaskSparsity(), 0.0);
  at::Tensor previous = s.Mask("fc1").clone();
  for (int step = 1; step <= 14; ++step) {
    TrainStep(net, s, opt, 20 + step);
    for (const std::string& layer : s.LayerNames()) {
      const at::Tensor& mask = s.Mask(layer);
      const int64_t zeros = mask.numel() - mask.sum().item<int64_t>();
      const int64_t due = std::min<int64_t>(std::max<int64_t>(step, 2), 10) / 2 * 2;  // last mask update
      EXPECT_EQ(zeros, std::llround(ScheduledSparsity(s.Config(layer), due) * mask.numel())) << layer << " " << step;
      EXPECT_TRUE(torch::equal(s.Weight(layer).detach().masked_select(mask.logical_not()),
                               torch::zeros({zeros})));
    }
    // Pruned weights stay pruned.
    EXPECT_FALSE((s.Mask("fc1") & previous.logical_not()).any().item<bool>()) << step;
    previous = s.Mask("fc1").clone();
  }
  EXPECT_NEAR(s.MaskSparsity(), 0.8, 1e-3);
}

// Global magnitude pruning: one threshold over all the layers' weights.
TEST(SparsifierTest, GlobalMagnitudePruningUsesOneThreshold) {
  torch::manual_seed(9);
  Net net;
  Sparsifier s(*net, GmpConfig(0.75, 0, 0, 1, /*global=*/true), kSkipConv1);
  int64_t zeros = 0, total = 0;
  float kept_min = 1e30f, pruned_max = 0;
  std::vector<double> per_layer;
  for (const std::string& layer : s.LayerNames()) {
    const at::Tensor& mask = s.Mask(layer);
    const at::Tensor a = s.Dense(layer).abs();
    zeros += mask.numel() - mask.sum().item<int64_t>();
    total += mask.numel();
    kept_min = std::min(kept_min, a.masked_select(mask).min().item<float>());
    pruned_max = std::max(pruned_max, a.masked_select(mask.logical_not()).max().item<float>());
    per_layer.push_back(1.0 - mask.to(torch::kDouble).mean().item<double>());
    EXPECT_TRUE(torch::equal(s.Weight(layer).detach().masked_select(mask.logical_not()),
                             torch::zeros({mask.numel() - mask.sum().item<int64_t>()})));
  }
  EXPECT_EQ(zeros, std::llround(0.75 * total));
  EXPECT_GE(kept_min, pruned_max);
  // conv2 (fan-in 72, larger weights) keeps more than fc1 (fan-in 784).
  EXPECT_LT(per_layer[0], per_layer[1]);
  SparseConfig other = GmpConfig(0.5, 0, 0, 1, true);
  ExpectError([&] { Sparsifier(*net, GmpConfig(0.75, 0, 0, 1, true), {{"conv1", std::nullopt}, {"fc2", other}}); },
              "global magnitude pruning needs the same settings on every layer it spans");
}

TEST(SparsifierTest, SaveAndLoadContinueIdentically) {
  const std::string path = ::testing::TempDir() + "/sparsifier_test.sparsity";
  const std::string model_path = ::testing::TempDir() + "/sparsifier_test.model";
  const std::string opt_path = ::testing::TempDir() + "/sparsifier_test.opt";
  SparseConfig c;  // SR-STE: masks and dense weights both matter
  auto make_opt = [](Net& net) { return torch::optim::Adam(net->parameters(), torch::optim::AdamOptions(1e-2)); };
  torch::manual_seed(6);
  Net a;
  Sparsifier sa(*a, c, kSkipConv1);
  torch::optim::Adam oa = make_opt(a);
  for (int step = 0; step < 3; ++step) TrainStep(a, sa, oa, 30 + step);
  {
    torch::serialize::OutputArchive archive;
    sa.Save(archive);
    archive.save_to(path);
  }
  auto load = [&path](Sparsifier& s) {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    s.Load(archive);
  };
  torch::save(a, model_path);
  torch::save(oa, opt_path);
  for (int step = 3; step < 6; ++step) TrainStep(a, sa, oa, 30 + step);

  torch::manual_seed(99);  // different initial weights: everything must come from the files
  Net b;
  torch::load(b, model_path);
  Sparsifier sb(*b, c, kSkipConv1);
  load(sb);
  torch::optim::Adam ob = make_opt(b);
  torch::load(ob, opt_path);
  EXPECT_EQ(sb.step(), 3);
  for (int step = 3; step < 6; ++step) TrainStep(b, sb, ob, 30 + step);
  for (const auto& p : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()])) << p.key();
  }
  for (const std::string& layer : sa.LayerNames()) {
    EXPECT_TRUE(torch::equal(sa.Mask(layer), sb.Mask(layer))) << layer;
    EXPECT_TRUE(torch::equal(sa.Dense(layer), sb.Dense(layer))) << layer;
  }
  // Different settings are refused.
  SparseConfig other = c;
  other.srste_lambda = 1e-3;
  Net d;
  Sparsifier sd(*d, other, kSkipConv1);
  ExpectError([&] { load(sd); }, "layer 'conv2' was saved as 2:4-srste-every1-lambda0.0002");
  std::remove(path.c_str());
  std::remove(model_path.c_str());
  std::remove(opt_path.c_str());
}

TEST(SparsifierTest, CompressedExportRoundTrips) {
  const std::string path = ::testing::TempDir() + "/sparsifier_test.nm";
  torch::manual_seed(7);
  Net net;
  Sparsifier s(*net, SparseConfig{}, kSkipConv1);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 3; ++step) TrainStep(net, s, opt, 40 + step);
  ExportNm(s, path);
  std::map<std::string, at::Tensor> back = ImportNm(path);
  ASSERT_EQ(back.size(), 3u);
  for (const std::string& layer : s.LayerNames()) {
    EXPECT_TRUE(torch::equal(back.at(layer), s.Weight(layer).detach())) << layer;
  }
  std::remove(path.c_str());
  SparseConfig gmp = GmpConfig(0.5, 0, 0, 1);
  Net other;
  Sparsifier unstructured(*other, gmp, kSkipConv1);
  ExpectError([&] { ExportNm(unstructured, path); }, "layer 'conv2' is not N:M sparse");
}

TEST(SparsifierTest, ComposesWithQat) {
  torch::manual_seed(8);
  Net net;
  qat::Prepare(*net, qat::PresetConfig("w4a8"));
  Sparsifier s(*net, SparseConfig{}, kSkipConv1);
  EXPECT_EQ(s.LayerNames(), (std::vector<std::string>{"conv2", "fc1", "fc2"}));
  {
    torch::NoGradGuard no_grad;
    net->forward(torch::randn({16, 1, 28, 28}));
  }
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    const double loss = TrainStep(net, s, opt, 50 + step % 2);
    if (step == 0) first = loss;
    last = loss;
  }
  EXPECT_LT(last, first);
  for (const std::string& layer : s.LayerNames()) ExpectNm(s.Weight(layer), s.Mask(layer), 2, 4, layer);
  // The quantized weights are sparse too: zero quantizes to zero.
  auto* fc1 = dynamic_cast<qat::QuantLinearImpl*>(net->named_children()["fc1"].get());
  ASSERT_NE(fc1, nullptr);
  at::Tensor wq = fc1->weight_quantizer->forward(fc1->weight).detach();
  EXPECT_TRUE((wq.masked_select(s.Mask("fc1").logical_not()) == 0).all().item<bool>());
}

TEST(SparsifierTest, BadConfigsNameTheLayerAndValue) {
  Net net;
  SparseConfig c;
  c.n = 4;
  ExpectError([&] { Sparsifier(*net, c, kSkipConv1); }, "layer 'conv2': N:M needs 1 <= n < m, got 4:4");
  c = {};
  c.n = 5;
  c.m = 4;
  ExpectError([&] { Sparsifier(*net, c, kSkipConv1); }, "N:M needs 1 <= n < m, got 5:4");
  ExpectError([&] { Sparsifier(*net, SparseConfig{}); },
              "layer 'conv1': its input dimension (1) is not a multiple of m = 4 for 2:4 sparsity");
  ExpectError([&] { Sparsifier(*net, GmpConfig(1.0, 0, 0, 1)); }, "sparsity must be in [0, 1), got 1");
  ExpectError([&] { Sparsifier(*net, GmpConfig(-0.5, 0, 0, 1)); }, "sparsity must be in [0, 1), got -0.5");
  c = {};
  c.update_every = 0;
  ExpectError([&] { Sparsifier(*net, c, kSkipConv1); }, "update_every must be >= 1, got 0");
  c = {};
  c.pattern = Pattern::kBlock;
  c.block_rows = 3;
  ExpectError([&] { Sparsifier(*net, c, kSkipConv1); }, "block 3 x 4 does not tile its [out, fan_in] weight [16, 72]");
}

}  // namespace
}  // namespace lowbit::sparsity
