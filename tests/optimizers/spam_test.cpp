// SPAM and Stable-SPAM against their rules written out with tensor ops in
// double precision (the papers' Alg. 1), against torch::optim::AdamW when
// every defence is off, and the 8-bit state against the fp32 one. Also: the
// clip bound and the reset schedule on hand-made gradients, save/load bit
// for bit across a reset, and bad settings.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "lowbit/optimizers/spam.h"
#include "tests/common/expect_error.h"

namespace lowbit::optim {
namespace {

using lowbit::testing::ExpectError;

struct Regression {
  at::Tensor x, y;
  Regression() {
    torch::manual_seed(3);
    x = torch::randn({256, 64});
    y = x.matmul(torch::randn({64, 96})) + 0.1 * torch::randn({256, 96});
  }
};

const Regression& Data() {
  static const Regression data;
  return data;
}

// Gradients with occasional spikes: the regression's, with a few elements
// times 1000 every 7th step.
at::Tensor Grad(const at::Tensor& w, const at::Tensor& b, int s) {
  at::Tensor wg = w.detach().clone().requires_grad_(), bg = b.detach().clone().requires_grad_();
  torch::mse_loss(Data().x.matmul(wg) + bg, Data().y).backward();
  at::Tensor g = wg.grad().clone();
  if (s % 7 == 6) {
    at::Tensor flat = g.view({-1});
    for (int64_t i : {5, 100, 4000}) flat[i].mul_(1000);
  }
  return g;
}

// The rules of the header, in double, on one tensor.
struct Reference {
  SpamOptions o;
  at::Tensor m, v, max_abs, norm_m, norm_v;
  int64_t t = 0, s = 0, k = 0;
  explicit Reference(SpamOptions options, at::IntArrayRef shape) : o(options) {
    m = torch::zeros(shape, torch::kDouble);
    v = torch::zeros(shape, torch::kDouble);
    max_abs = norm_m = norm_v = torch::zeros({}, torch::kDouble);
  }
  void Step(at::Tensor& p, at::Tensor g) {
    g = g.to(torch::kDouble);
    ++t;
    const int64_t dt = o.reset_interval();
    if (dt > 0 && t % dt == 0) {
      m.zero_();
      v.zero_();
      if (o.stable()) s = 0;
    }
    ++s;
    if (o.spike_threshold() > 0 && t >= o.clip_delay() && (dt == 0 || t % dt >= o.clip_delay())) {
      at::Tensor bound = (v * o.spike_threshold()).sqrt();
      g = torch::where(g.abs() > bound, g.sign() * bound, g);
    }
    if (o.stable()) {
      ++k;
      const double g1 = o.gamma1(), g2 = o.gamma2(), g3 = o.gamma3();
      at::Tensor gmax = g.abs().max();
      max_abs = g3 * max_abs + (1 - g3) * gmax;
      at::Tensor thr = max_abs / (1 - std::pow(g3, k));
      g = torch::where(g.abs() > thr, g / gmax * thr, g);
      at::Tensor n = g.norm();
      norm_m = g1 * norm_m + (1 - g1) * n;
      norm_v = g2 * norm_v + (1 - g2) * n * n;
      at::Tensor c = (norm_m / (1 - std::pow(g1, k))) / ((norm_v / (1 - std::pow(g2, k))).sqrt() + o.eps());
      g = g / n * c;
    }
    double scale = 1;
    if (dt > 0 && o.warmup_steps() > 0 && t >= dt && t % dt < o.warmup_steps()) {
      scale = 1 - 0.99 * (1 + std::cos(M_PI * (t % dt) / (o.warmup_steps() + 1))) / 2;
    }
    const auto [b1, b2] = o.betas();
    at::Tensor pd = p.detach().to(torch::kDouble) * (1 - o.lr() * o.weight_decay());
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    at::Tensor denom = v.sqrt() / std::sqrt(1 - std::pow(b2, s)) + o.eps();
    pd -= scale * o.lr() / (1 - std::pow(b1, s)) * m / denom;
    torch::NoGradGuard ng;
    p.copy_(pd.to(torch::kFloat));
  }
};

// Runs `steps` steps of Spam on spiky regression gradients; before each, the
// reference takes the same gradient from the same weights (its m and v its
// own, in double); returns the largest gap of an update beyond the weights'
// float rounding, relative to the largest update.
double GapToReference(const SpamOptions& o, int steps, int64_t* spike_clipped, int64_t* ada_clipped) {
  torch::manual_seed(5);
  at::Tensor w = (torch::randn({64, 96}) * 0.1).requires_grad_();
  at::Tensor b = torch::zeros({96});
  Spam opt({w}, o);
  Reference r(o, w.sizes());
  double gap = 0;
  for (int s = 0; s < steps; ++s) {
    const at::Tensor g = Grad(w, b, s);
    at::Tensor ref = w.detach().clone();
    const at::Tensor before = ref.clone();
    r.Step(ref, g);
    w.mutable_grad() = g.clone();
    opt.step();
    *spike_clipped += opt.LastStepStats().spike_clipped;
    *ada_clipped += opt.LastStepStats().ada_clipped;
    const double step = (ref - before).abs().max().item<double>();
    // Beyond the float rounding of the weights themselves.
    const at::Tensor err = ((w.detach() - ref).abs() - 2.5e-7 * before.abs()).clamp_min(0);
    gap = std::max(gap, err.max().item<double>() / step);
  }
  return gap;
}

TEST(Spam, WithEveryDefenceOffItIsAdamW) {
  torch::manual_seed(5);
  at::Tensor w1 = (torch::randn({64, 96}) * 0.1).requires_grad_(), w2 = w1.detach().clone().requires_grad_();
  at::Tensor b1 = torch::zeros({96}).requires_grad_(), b2 = b1.detach().clone().requires_grad_();
  Spam spam({w1, b1}, SpamOptions(1e-2).weight_decay(0.1).reset_interval(0).spike_threshold(0));
  torch::optim::AdamW adamw({w2, b2}, torch::optim::AdamWOptions(1e-2).weight_decay(0.1).eps(1e-8));
  for (int s = 0; s < 30; ++s) {
    for (auto [opt, w, b] : {std::make_tuple<torch::optim::Optimizer*>(&spam, w1, b1),
                             std::make_tuple<torch::optim::Optimizer*>(&adamw, w2, b2)}) {
      opt->zero_grad();
      torch::mse_loss(Data().x.matmul(w) + b, Data().y).backward();
      opt->step();
    }
    ASSERT_TRUE(torch::allclose(w1, w2, 1e-5, 1e-6)) << "step " << s;
    ASSERT_TRUE(torch::allclose(b1, b2, 1e-5, 1e-6)) << "step " << s;
  }
}

TEST(Spam, FollowsSpamRulesWithResetsClippingAndWarmup) {
  int64_t spikes = 0, ada = 0;
  const SpamOptions o = SpamOptions(3e-3).weight_decay(0.01).reset_interval(12).warmup_steps(5).clip_delay(3);
  EXPECT_LT(GapToReference(o, 40, &spikes, &ada), 1e-4);
  EXPECT_GT(spikes, 0) << "the injected spikes must be clipped";
  EXPECT_EQ(ada, 0);
}

TEST(Spam, FollowsStableSpamRules) {
  int64_t spikes = 0, ada = 0;
  const SpamOptions o = SpamOptions::StableSpam(3e-3).reset_interval(15);
  EXPECT_LT(GapToReference(o, 40, &spikes, &ada), 1e-4);
  EXPECT_EQ(spikes, 0);
  EXPECT_GT(ada, 0) << "AdaClip must cut the injected spikes";
  // Both defences at once.
  spikes = ada = 0;
  EXPECT_LT(GapToReference(SpamOptions::StableSpam(3e-3).reset_interval(15).clip_delay(3).spike_threshold(5000), 40,
                           &spikes, &ada),
            1e-4);
  EXPECT_GT(spikes, 0);
}

// The clip bound on a hand-made gradient: after steps of constant gradient
// c, v = (1 - b2^t) c^2; a spike S > sqrt(theta v) enters m as
// sign(S) sqrt(theta v).
TEST(Spam, SpikeIsClippedToTheBound) {
  at::Tensor p = torch::zeros({4}).requires_grad_();
  const double theta = 5000, b1 = 0.9, b2 = 0.999;
  Spam opt({p}, SpamOptions(1e-3).reset_interval(0).clip_delay(2).spike_threshold(theta));
  const int warm = 5;
  for (int s = 0; s < warm; ++s) {
    p.mutable_grad() = torch::full({4}, 0.5);
    opt.step();
  }
  const double v = (1 - std::pow(b2, warm)) * 0.25;
  const at::Tensor m_before = opt.State(p, "m");
  p.mutable_grad() = torch::tensor({0.5f, -1e4f, 1e4f, 2.0f});
  opt.step();
  const double bound = std::sqrt(theta * v);
  EXPECT_EQ(opt.LastStepStats().spike_clipped, 2);
  at::Tensor expect = m_before * b1 + (1 - b1) * torch::tensor({0.5, -bound, bound, 2.0}, torch::kFloat);
  EXPECT_TRUE(torch::allclose(opt.State(p, "m"), expect, 1e-5, 1e-7)) << opt.State(p, "m") << expect;
}

TEST(Spam, ResetScheduleAndWarmupScale) {
  const SpamOptions o = SpamOptions().reset_interval(10).warmup_steps(4);
  EXPECT_EQ(Spam::WarmupScale(o, 9), 1.0);
  EXPECT_NEAR(Spam::WarmupScale(o, 10), 0.01, 1e-12);
  EXPECT_NEAR(Spam::WarmupScale(o, 12), 1 - 0.99 * (1 + std::cos(M_PI * 2 / 5)) / 2, 1e-12);
  EXPECT_EQ(Spam::WarmupScale(o, 14), 1.0);
  EXPECT_NEAR(Spam::WarmupScale(o, 20), 0.01, 1e-12);
  at::Tensor p = torch::zeros({8}).requires_grad_();
  Spam opt({p}, o);
  for (int t = 1; t <= 21; ++t) {
    p.mutable_grad() = torch::ones({8});
    opt.step();
    EXPECT_EQ(opt.LastStepStats().reset, t % 10 == 0) << t;
    if (t % 10 == 0) {
      // m and v restarted from 0 at this step: m = (1 - b1) g.
      EXPECT_TRUE(torch::allclose(opt.State(p, "m"), torch::full({8}, 0.1), 1e-6, 1e-7)) << t;
    }
  }
}

TEST(Spam, EightBitStateTracksFp32) {
  for (bool stable : {false, true}) {
    SCOPED_TRACE(stable);
    torch::manual_seed(5);
    at::Tensor w32 = (torch::randn({64, 96}) * 0.1).requires_grad_(), w8 = w32.detach().clone().requires_grad_();
    at::Tensor b = torch::zeros({96});
    SpamOptions o =
        stable ? SpamOptions::StableSpam(1e-2) : SpamOptions(1e-2).reset_interval(30).warmup_steps(5).clip_delay(5);
    Spam a({w32}, o), e({w8}, SpamOptions(o).state_bits(8));
    for (int s = 0; s < 60; ++s) {
      w32.mutable_grad() = Grad(w32, b, s);
      w8.mutable_grad() = Grad(w8, b, s);
      a.step();
      e.step();
    }
    const double l32 = torch::mse_loss(Data().x.matmul(w32), Data().y).item<double>();
    const double l8 = torch::mse_loss(Data().x.matmul(w8), Data().y).item<double>();
    // Spiky gradients: the 8-bit blocks holding a spike lose resolution for a while.
    EXPECT_NEAR(l8, l32, 0.06 * l32);
    EXPECT_NEAR(static_cast<double>(e.StateBytes()) / w8.numel(), 2.0 + 8.0 / 256 + (stable ? 12.0 / w8.numel() : 0),
                1e-9);
    EXPECT_EQ(a.StateBytes(), 8 * w32.numel() + (stable ? 12 : 0));
  }
}

TEST(Spam, SaveLoadContinuesBitForBitAcrossAReset) {
  for (int variant = 0; variant < 4; ++variant) {
    SCOPED_TRACE(variant);
    SpamOptions o = variant % 2 ? SpamOptions::StableSpam(1e-2).reset_interval(9)
                                : SpamOptions(1e-2).reset_interval(9).warmup_steps(3).clip_delay(2).spike_threshold(20);
    o.state_bits(variant >= 2 ? 8 : 32).weight_decay(0.01);
    torch::manual_seed(1);
    at::Tensor w = (torch::randn({64, 96}) * 0.1).requires_grad_();
    at::Tensor b = torch::zeros({96}).requires_grad_();
    auto run = [&](Spam& opt, at::Tensor& ww, at::Tensor& bb, int from, int steps) {
      for (int s = from; s < from + steps; ++s) {
        ww.mutable_grad() = Grad(ww, bb.detach(), s);
        bb.mutable_grad() = torch::ones({96}) * 0.01 * s;
        opt.step();
      }
    };
    Spam opt({w, b}, o);
    run(opt, w, b, 0, 7);
    std::stringstream saved;
    torch::save(opt, saved);
    at::Tensor w2 = w.detach().clone().requires_grad_(), b2 = b.detach().clone().requires_grad_();
    Spam resumed({w2, b2}, o);
    torch::load(resumed, saved);
    EXPECT_EQ(resumed.steps(), 7);
    EXPECT_EQ(resumed.StateBytes(), opt.StateBytes());
    run(opt, w, b, 7, 8);
    run(resumed, w2, b2, 7, 8);
    EXPECT_TRUE(torch::equal(w, w2));
    EXPECT_TRUE(torch::equal(b, b2));
  }
}

TEST(Spam, LoadRejectsAnotherLayout) {
  at::Tensor a = torch::zeros({8192}).requires_grad_();
  a.mutable_grad() = torch::ones({8192});
  Spam opt({a}, SpamOptions().state_bits(8));
  opt.step();
  std::stringstream saved;
  torch::save(opt, saved);
  Spam fp32({a}, SpamOptions());
  ExpectError([&] { torch::load(fp32, saved); }, "state_bits, min_8bit_size or stable differ");
  std::stringstream again(saved.str());
  at::Tensor c = torch::zeros({3}).requires_grad_();
  Spam two({a, c}, SpamOptions().state_bits(8));
  ExpectError([&] { torch::load(two, again); }, "the archive has state for 1 parameters, this optimizer has 2");
}

TEST(Spam, BadSettingsAreNamed) {
  std::vector<at::Tensor> p{torch::zeros({10}).requires_grad_()};
  ExpectError([&] { Spam(p, SpamOptions(0)); }, "Spam group 0: lr must be > 0, got 0");
  ExpectError([&] { Spam(p, SpamOptions().betas({1.0, 0.999})); }, "betas[0] must be in [0, 1), got 1");
  ExpectError([&] { Spam(p, SpamOptions().reset_interval(-1)); }, "reset_interval must be >= 0 (0: never), got -1");
  ExpectError([&] { Spam(p, SpamOptions().reset_interval(100).warmup_steps(100)); },
              "warmup_steps (100) must be below reset_interval (100)");
  ExpectError([&] { Spam(p, SpamOptions().spike_threshold(-5)); }, "spike_threshold must be >= 0, got -5");
  ExpectError([&] { Spam(p, SpamOptions::StableSpam().gamma3(1.0)); }, "gamma3 must be in [0, 1), got 1");
  ExpectError([&] { Spam(p, SpamOptions().state_bits(4)); }, "state_bits must be 32 or 8, got 4");
  ExpectError([&] { Spam(p, SpamOptions().block_size(100)); }, "block_size must be a power of two");
  ExpectError([&] { Spam(p, SpamOptions().weight_decay(-1)); }, "weight_decay must be >= 0, got -1");
  ExpectError([&] { Spam({torch::zeros({3}, torch::kDouble).requires_grad_()}); }, "parameters must be float32");
}

}  // namespace
}  // namespace lowbit::optim
