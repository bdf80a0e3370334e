// The training-time QAT methods against their formulas in one process:
// OFQ's StatsQ grid and oscillation freezing, Tequila's dead-zone bias (its
// forward and the gradient a dead-zone weight gets), EfficientQAT's E2E-QP
// (only step sizes change; the levels stay), and Convert's round trip for
// each. Also the errors for settings that make no sense.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "lowbit/qat/convert.h"
#include "lowbit/qat/fake_quantizer.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/qat/qk_reparam.h"
#include "lowbit/qat/quant_modules.h"
#include "tests/common/expect_error.h"

namespace lowbit::qat {
namespace {

using lowbit::testing::ExpectError;

QuantizerConfig StatsQ(int bits, double freeze = 0) {
  QuantizerConfig c;
  c.bits = bits;
  c.granularity = Granularity::kPerChannel;
  c.estimator = Estimator::kStatsQ;
  c.freeze_threshold = freeze;
  return c;
}

// OFQ's StatsQ: s = 2 mean|w| per row; w_hat = s (round(clamp(w/s, -1, 1) n - 1/2) + 1/2) / n, n = 2^(b-1).
TEST(StatsQ, GridIsTwiceTheMeanAbsWithHalfIntegerLevels) {
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(bits);
    torch::manual_seed(bits);
    const at::Tensor w = (torch::randn({6, 40}) * 0.3).requires_grad_();
    FakeQuantizer q(StatsQ(bits), 6, /*is_weight=*/true);
    const at::Tensor y = q->forward(w);
    const double n = std::pow(2.0, bits - 1);
    const at::Tensor s = 2 * w.detach().abs().mean(1, true);
    const at::Tensor want = s * ((torch::round(torch::clamp(w.detach() / s, -1, 1 - 1e-6) * n - 0.5) + 0.5) / n);
    EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-6));
    EXPECT_EQ(std::get<0>(at::_unique(torch::round(y.detach() / (s / n) - 0.5))).numel() <= (1 << bits), true);
    y.sum().backward();
    EXPECT_TRUE(torch::equal(w.grad(), torch::ones_like(w))) << "StatsQ passes the gradient straight through";
  }
}

// An element whose level goes back and forth oscillates; with momentum m
// its frequency after k oscillations is 1 - (1 - m)^k; above the threshold
// it is frozen at its rounded mean level and gets no gradient.
TEST(OscillationFreezing, OscillatingWeightsFreezeAndStayFrozen) {
  const int64_t out = 2, in = 64;
  QuantizerConfig c = StatsQ(4, /*freeze=*/0.05);
  c.oscillation_momentum = 0.1;
  FakeQuantizer q(c, out, true);
  q->SetWeightShape(out, in);
  torch::manual_seed(1);
  at::Tensor base = torch::randn({out, in}) * 0.1;
  // Element (0, 0) sits on a rounding boundary and is pushed across it every step.
  const double s = 2 * base[0].abs().mean().item<double>();
  const double step = s / 8;
  base[0][0] = 3 * step;  // between levels 2.5 and 3.5 steps: boundary
  int frozen_at = -1;
  double frozen_level = 0;
  for (int t = 0; t < 30; ++t) {
    at::Tensor w = base.clone();
    w[0][0] += (t % 2 ? 0.2 : -0.2) * step;
    w.requires_grad_();
    const at::Tensor y = q->forward(w);
    y.sum().backward();
    // The level of (0, 0) on this step's grid (the row's scale moves with it).
    const double level = y[0][0].item<double>() / (2 * w[0].detach().abs().mean().item<double>() / 8) - 0.5;
    if (frozen_at < 0 && q->FrozenMask()[0][0].item<bool>()) {
      frozen_at = t;
      frozen_level = level;
    }
    if (frozen_at >= 0) {
      EXPECT_EQ(w.grad()[0][0].item<float>(), 0.0f) << "a frozen weight gets no gradient";
      EXPECT_NEAR(level, frozen_level, 1e-4) << "a frozen weight keeps its level";
    } else {
      EXPECT_EQ(w.grad()[0][0].item<float>(), 1.0f);
    }
    EXPECT_EQ(w.grad()[1][5].item<float>(), 1.0f);
  }
  // Oscillations start at the third forward (the second switch reverses the
  // first): after k of them f = 1 - 0.9^k > 0.05 first at k = 1.
  EXPECT_EQ(frozen_at, 2);
  EXPECT_NEAR(q->FrozenFraction(), 1.0 / (out * in), 1e-9) << "the steady weights never froze";
  // The state is saved with the module and restored exactly.
  std::stringstream saved;
  torch::save(q, saved);
  FakeQuantizer r(c, out, true);
  r->SetWeightShape(out, in);
  torch::load(r, saved);
  EXPECT_TRUE(torch::equal(r->FrozenMask(), q->FrozenMask()));
  r->eval();
  q->eval();
  const at::Tensor probe = base + 0.01;
  EXPECT_TRUE(torch::equal(r->forward(probe), q->forward(probe)));
}

// freeze_start: the tracking runs from the first forward, the freezing waits.
TEST(OscillationFreezing, FreezeStartDelaysFreezing) {
  QuantizerConfig c = StatsQ(4, /*freeze=*/0.05);
  c.oscillation_momentum = 0.1;
  c.freeze_start = 6;
  FakeQuantizer q(c, 2, true);
  q->SetWeightShape(2, 64);
  torch::manual_seed(1);
  at::Tensor base = torch::randn({2, 64}) * 0.1;
  const double step = 2 * base[0].abs().mean().item<double>() / 8;
  base[0][0] = 3 * step;
  int frozen_at = -1;
  for (int t = 0; t < 12 && frozen_at < 0; ++t) {
    at::Tensor w = base.clone();
    w[0][0] += (t % 2 ? 0.2 : -0.2) * step;
    q->forward(w);
    if (q->FrozenMask()[0][0].item<bool>()) frozen_at = t;
  }
  EXPECT_EQ(frozen_at, 6) << "oscillating since forward 2, frozen once 6 forwards have passed";
  EXPECT_EQ(PresetConfig("w4a4_ofq", 600).layers.weight->freeze_start, 300);
  EXPECT_EQ(PresetConfig("w4a4_lsq", 600).layers.weight->freeze_start, 0);
}

LayerConfig Ternary(bool tequila, double lambda) {
  QuantizerConfig w;
  w.format = Format::kTernary;
  w.granularity = Granularity::kPerChannel;
  w.observer = Observer::kAbsMean;
  w.dead_zone_bias = tequila;
  w.dead_zone_lambda = lambda;
  return {w, std::nullopt, {}};
}

// Tequila: y = x T^T + b + lambda * (row sums of the dead-zone weights), so
// dL/dw for a dead-zone weight is the straight-through x^T dy plus lambda
// times the summed output gradient of its row.
TEST(Tequila, DeadZoneWeightsComeBackAsABiasWithItsGradient) {
  const double lambda = 0.05;
  torch::manual_seed(4);
  for (bool tequila : {false, true}) {
    SCOPED_TRACE(tequila);
    torch::manual_seed(4);
    Linear layer(16, 5);
    layer->Configure(Ternary(tequila, lambda));
    const at::Tensor x = torch::randn({7, 16});
    const at::Tensor dy = torch::randn({7, 5});
    const at::Tensor y = layer(x);
    (y * dy).sum().backward();
    const at::Tensor w = layer->weight.detach();
    const at::Tensor s = w.abs().mean(1, true);
    const at::Tensor levels = torch::clamp(torch::round(w / s), -1, 1);
    const at::Tensor dead = levels.eq(0).to(torch::kFloat);
    ASSERT_GT(dead.sum().item<double>(), 0);
    at::Tensor want_y = x.matmul((levels * s).t()) + layer->bias.detach();
    at::Tensor want_grad = dy.t().matmul(x);
    if (tequila) {
      want_y = want_y + lambda * (w * dead).sum(1);
      want_grad = want_grad + lambda * dead * dy.sum(0).unsqueeze(1);
    }
    EXPECT_TRUE(torch::allclose(y, want_y, 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(layer->weight.grad(), want_grad, 1e-5, 1e-5));
    // Converted: the levels and the dead-zone bias folded into the bias.
    layer->eval();
    const at::Tensor before = layer(x).detach();
    torch::nn::Sequential model(layer);
    Convert(*model);
    auto* converted = dynamic_cast<QuantizedLinearImpl*>(model->ptr(0).get());
    ASSERT_NE(converted, nullptr);
    EXPECT_TRUE(torch::allclose(converted->forward(x), before, 1e-5, 1e-6));
  }
}

// E2E-QP: after FreezeLevels, training changes the step sizes and nothing
// else; the levels are those of the weights at the time of freezing.
TEST(E2eQp, OnlyStepSizesTrainAndLevelsStay) {
  torch::manual_seed(2);
  torch::nn::Sequential model(torch::nn::Linear(12, 24), torch::nn::ReLU(), torch::nn::Linear(24, 3));
  Prepare(*model, PresetConfig("w2_lsq"));
  const at::Tensor x = torch::randn({64, 12});
  const at::Tensor target = torch::randn({64, 3});
  Calibrate(*model, [&] { model->forward(x); });
  std::vector<at::Tensor> before;
  for (auto& p : model->named_parameters()) before.push_back(p.value().detach().clone());
  const std::vector<at::Tensor> trainable = FreezeLevels(*model);
  ASSERT_EQ(trainable.size(), 2u) << "one learned step per layer";
  int64_t numel = 0;
  for (const at::Tensor& t : trainable) numel += t.numel();
  EXPECT_EQ(numel, 24 + 3) << "per-channel steps";
  auto levels = [&] {
    std::vector<at::Tensor> out;
    for (auto& b : model->named_buffers()) {
      if (b.key().find("frozen_levels") != std::string::npos) out.push_back(b.value().clone());
    }
    return out;
  };
  const auto levels0 = levels();
  ASSERT_EQ(levels0.size(), 2u);
  torch::optim::Adam opt(trainable, torch::optim::AdamOptions(1e-2));
  double first = 0, last = 0;
  for (int s = 0; s < 50; ++s) {
    opt.zero_grad();
    const at::Tensor loss = torch::mse_loss(model->forward(x), target);
    loss.backward();
    opt.step();
    (s == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first) << "the step sizes alone lower the loss";
  size_t i = 0;
  for (auto& p : model->named_parameters()) {
    const bool is_step = p.key().find("log_scale") != std::string::npos;
    EXPECT_EQ(torch::equal(p.value().detach(), before[i]), !is_step) << p.key();
    ++i;
  }
  const auto levels1 = levels();
  for (size_t k = 0; k < levels0.size(); ++k) EXPECT_TRUE(torch::equal(levels0[k], levels1[k]));
  // The forward is levels * step exactly, and Convert stores those levels.
  model->eval();
  const at::Tensor y = model->forward(x).detach();
  Convert(*model);
  EXPECT_TRUE(torch::allclose(model->forward(x), y, 1e-5, 1e-6));
  auto* first_layer = dynamic_cast<QuantizedLinearImpl*>(model->ptr(0).get());
  ASSERT_NE(first_layer, nullptr);
  EXPECT_TRUE(torch::equal(first_layer->weight_codes.to(torch::kFloat), levels0[0]));
}

TEST(StatsQ, ConvertRoundTripsWithFrozenElements) {
  torch::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(10, 20), torch::nn::ReLU(), torch::nn::Linear(20, 4));
  QatConfig config;
  config.layers = {StatsQ(2, 0.01), std::nullopt, {}};
  config.layers.weight->oscillation_momentum = 0.5;
  Prepare(*model, config);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05));
  const at::Tensor x = torch::randn({32, 10});
  for (int s = 0; s < 40; ++s) {
    opt.zero_grad();
    model->forward(x).pow(2).mean().backward();
    opt.step();
  }
  EXPECT_GT(MeanFrozenFraction(*model), 0.0) << "some elements froze";
  model->eval();
  const at::Tensor y = model->forward(x).detach();
  Convert(*model);
  EXPECT_TRUE(torch::allclose(model->forward(x), y, 1e-5, 1e-6));
}

QuantizerConfig Dkm(int bits, double temperature, int64_t iters, bool unique) {
  QuantizerConfig c;
  c.format = Format::kPalette;
  c.estimator = Estimator::kDkm;
  c.bits = bits;
  c.dkm_temperature = temperature;
  c.dkm_iters = iters;
  c.dkm_unique = unique;
  return c;
}

// DKM's forward written out: A = softmax(-|w - c| / tau);
// c <- A^T w / A^T 1, `iters` times from the centroids given; w_hat = A c.
at::Tensor DkmReference(const at::Tensor& w, at::Tensor c, double tau, int iters) {
  const at::Tensor u = w.reshape({-1, 1}).to(torch::kDouble);
  c = c.to(torch::kDouble);
  for (int i = 0; i < iters; ++i) {
    const at::Tensor a = torch::softmax(-(u - c.view({1, -1})).abs() / tau, 1);
    c = (a * u).sum(0) / a.sum(0);
  }
  const at::Tensor a = torch::softmax(-(u - c.view({1, -1})).abs() / tau, 1);
  return a.matmul(c.view({-1, 1})).view(w.sizes()).to(torch::kFloat);
}

TEST(Dkm, SoftAssignmentMatchesTheFormulaAndFiniteDifferences) {
  torch::manual_seed(6);
  const at::Tensor w0 = torch::randn({4, 6});
  FakeQuantizer q(Dkm(2, 0.3, 3, /*unique=*/false), 1, true);
  q->forward(w0);  // initialises the centroids from quantiles, then iterates
  const at::Tensor c0 = q->Centroids().clone();
  auto run = [&](const at::Tensor& w) {
    torch::NoGradGuard no_grad;
    q->Centroids().copy_(c0);  // each evaluation starts from the same centroids
    return q->forward(w);
  };
  EXPECT_TRUE(torch::allclose(run(w0), DkmReference(w0, c0, 0.3 * w0.std().item<double>(), 3), 1e-4, 1e-5));
  // d(sum r * w_hat)/dw by autograd against central differences.
  const at::Tensor r = torch::randn({4, 6});
  q->Centroids().copy_(c0);
  const at::Tensor w = w0.clone().requires_grad_();
  (q->forward(w) * r).sum().backward();
  const double h = 1e-2;
  for (int64_t i = 0; i < w0.numel(); i += 5) {
    at::Tensor plus = w0.clone(), minus = w0.clone();
    plus.view({-1})[i] += h;
    minus.view({-1})[i] -= h;
    const double fd = ((run(plus) - run(minus)) * r).sum().item<double>() / (2 * h);
    EXPECT_NEAR(w.grad().view({-1})[i].item<double>(), fd, 2e-2 * std::max(1.0, std::abs(fd))) << "element " << i;
  }
}

// eDKM: over weights that take few distinct fp16 values the attention map
// has one row per distinct value, and the result is DKM's.
TEST(Dkm, UniquifiedAttentionMapIsSmallerAndGivesTheSameWeights) {
  torch::manual_seed(7);
  const at::Tensor levels = torch::randn({50}).to(torch::kHalf).to(torch::kFloat);
  const at::Tensor w = levels.index_select(0, torch::randint(50, {40, 100}).view({-1})).view({40, 100});
  FakeQuantizer full(Dkm(3, 0.1, 4, false), 1, true), unique(Dkm(3, 0.1, 4, true), 1, true);
  const at::Tensor a = full->forward(w), b = unique->forward(w);
  EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(full->Centroids(), unique->Centroids(), 1e-4, 1e-5));
  const int64_t distinct = std::get<0>(at::_unique(w)).numel();
  EXPECT_EQ(unique->LastAttentionBytes() * 4000, full->LastAttentionBytes() * distinct);
}

TEST(Dkm, ConvertStoresPaletteIndicesAndTheCodebook) {
  torch::manual_seed(8);
  torch::nn::Sequential model(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  Prepare(*model, PresetConfig("dkm3"));
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
  const at::Tensor x = torch::randn({64, 16});
  for (int s = 0; s < 20; ++s) {
    opt.zero_grad();
    model->forward(x).pow(2).mean().backward();
    opt.step();
  }
  model->eval();
  const at::Tensor y = model->forward(x).detach();
  Convert(*model);
  EXPECT_TRUE(torch::allclose(model->forward(x), y, 1e-5, 1e-6));
  auto* layer = dynamic_cast<QuantizedLinearImpl*>(model->ptr(0).get());
  ASSERT_NE(layer, nullptr);
  EXPECT_EQ(layer->weight_scale.numel(), 8);
  EXPECT_LE(std::get<0>(at::_unique(layer->Weight())).numel(), 8) << "every weight is one of 8 centroids";
  const std::string path = ::testing::TempDir() + "dkm.lbq";
  SaveQuantized(*model, path);
  torch::nn::Sequential fresh(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  Prepare(*fresh, PresetConfig("dkm3"));
  fresh->forward(x);
  Convert(*fresh);
  LoadQuantized(*fresh, path);
  EXPECT_TRUE(torch::equal(fresh->forward(x), model->forward(x)));
}

// OFQ's query-key reparameterisation: without a quantizer the scores are
// q k^T exactly (biases included); with one, x Q(W_q,h^T W_k,h) x^T plus the
// bias terms, and the gradient reaches W_q and W_k through the product.
TEST(QkReparam, ScoresFromTheQuantizedProduct) {
  torch::manual_seed(9);
  const int64_t B = 2, T = 5, C = 8, H = 2, hd = C / H;
  const at::Tensor x = torch::randn({B, T, C});
  const at::Tensor w = torch::randn({3 * C, C}).requires_grad_();
  const at::Tensor b = torch::randn({3 * C});
  auto heads = [&](const at::Tensor& t) { return t.view({B, T, H, hd}).transpose(1, 2); };
  const at::Tensor qkv = torch::nn::functional::linear(x, w, b);
  const at::Tensor want = torch::matmul(heads(qkv.narrow(2, 0, C)), heads(qkv.narrow(2, C, C)).transpose(-2, -1));
  EXPECT_TRUE(torch::allclose(QkReparamScores(x, w, b, H, nullptr), want, 1e-4, 1e-4));
  FakeQuantizer q(StatsQ(2), H * C, true);
  q->SetWeightShape(H * C, C);
  const at::Tensor s = QkReparamScores(x, w, b, H, q.get());
  at::Tensor m = torch::matmul(w.detach().narrow(0, 0, C).view({H, hd, C}).transpose(1, 2),
                               w.detach().narrow(0, C, C).view({H, hd, C}));
  const at::Tensor sc = 2 * m.reshape({H * C, C}).abs().mean(1, true);
  const at::Tensor mq =
      (sc * ((torch::round(torch::clamp(m.reshape({H * C, C}) / sc, -1, 1 - 1e-6) * 2 - 0.5) + 0.5) / 2))
          .view({H, C, C});
  const at::Tensor bias_terms =
      want - torch::matmul(x.unsqueeze(1), torch::matmul(m, x.unsqueeze(1).transpose(-2, -1)));
  const at::Tensor expect =
      torch::matmul(x.unsqueeze(1), torch::matmul(mq, x.unsqueeze(1).transpose(-2, -1))) + bias_terms;
  EXPECT_TRUE(torch::allclose(s, expect, 1e-3, 1e-3));
  s.sum().backward();
  EXPECT_GT(w.grad().narrow(0, 0, 2 * C).abs().sum().item<double>(), 0);
  EXPECT_EQ(w.grad().narrow(0, 2 * C, C).abs().sum().item<double>(), 0) << "the value rows are not in the scores";
}

TEST(TrainingMethods, BadSettingsAreNamed) {
  QuantizerConfig c = StatsQ(4);
  ExpectError([&] { FakeQuantizer(c, 1, /*is_weight=*/false); }, "statsq is for weights");
  c.is_signed = false;
  ExpectError([&] { CheckQuantizerConfig(c, "fc1.weight"); }, "fc1.weight: statsq is a signed symmetric int grid");
  QuantizerConfig q;
  q.estimator = Estimator::kQuest;
  q.freeze_threshold = 0.1;
  ExpectError([&] { CheckQuantizerConfig(q, "w"); }, "freezing needs an int or ternary weight grid");
  QuantizerConfig f;
  f.freeze_threshold = 2;
  ExpectError([&] { CheckQuantizerConfig(f, "w"); }, "freeze_threshold must be in [0, 1] (0: off), got 2");
  QuantizerConfig d;
  d.dead_zone_bias = true;
  ExpectError([&] { CheckQuantizerConfig(d, "w"); }, "dead_zone_bias is for ternary weights");
  torch::nn::Sequential model(torch::nn::Linear(4, 4));
  ExpectError([&] { FreezeLevels(*model); }, "no prepared layers");
  Prepare(*model, PresetConfig("w8a8"));
  ExpectError([&] { FreezeLevels(*model); }, "needs lsq or lsq+ weights; layer '0' has int8-sym-per_channel-ste");
  ExpectError([&] { CheckQuantizerConfig(Dkm(3, 0, 5, true), "w"); }, "dkm_temperature must be > 0, got 0");
  ExpectError([&] { CheckQuantizerConfig(Dkm(3, 0.1, 0, true), "w"); }, "dkm_iters must be in [1, 100], got 0");
  QuantizerConfig palette = Dkm(3, 0.1, 5, true);
  palette.estimator = Estimator::kSte;
  ExpectError([&] { CheckQuantizerConfig(palette, "w"); }, "a palette is learned by dkm");
}

}  // namespace
}  // namespace lowbit::qat
