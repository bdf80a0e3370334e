// 1-bit Adam, 0/1 Adam and 1-bit LAMB on P real ranks, against
// - torch::optim::Adam / AdamW on the averaged gradients (warm-up, <= 1e-6);
// - a one-process reference of the same equations that simulates all P ranks
//   and DeepSpeed's two-phase 1-bit allreduce, bit for bit. Gradients of the
//   averaged steps are multiples of 1/16, so their mean is exact whatever
//   order MPI sums in; the compressed steps use arbitrary local gradients;
// - the 0/1 Adam schedules and the 1-bit LAMB bounds from their definitions;
// - DDP: no bytes in the compression phase, local gradients, NoSync;
// - a state round trip that continues bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/compression_hook.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/optimizers/onebit_adam.h"
#include "lowbit/optimizers/onebit_lamb.h"
#include "lowbit/optimizers/zero_one_adam.h"
#include "tests/common/test_env.h"
#include "tests/common/expect_error.h"

namespace lowbit::optim {
namespace {

using lowbit::testing::ExpectError;

using lowbit::testing::Pg;
using Tensors = std::vector<at::Tensor>;

const std::vector<std::vector<int64_t>> kShapes = {{24, 40}, {24}, {10, 24}, {10}};

Tensors InitialParams() {
  at::Generator gen = at::detail::createCPUGenerator(7);
  Tensors out;
  for (const auto& s : kShapes) out.push_back((torch::randn(s, gen) * 0.1).requires_grad_());
  return out;
}

Tensors Detached(const Tensors& ts) {
  Tensors out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

// Rank r's gradients at step t: multiples of 1/16 in [-2, 2] when `dyadic`.
Tensors Grads(int rank, int64_t t, bool dyadic) {
  at::Generator gen = at::detail::createCPUGenerator(1000 * t + rank);
  Tensors out;
  for (const auto& s : kShapes) {
    out.push_back(dyadic ? torch::randint(-32, 33, s, gen).to(torch::kFloat) / 16 : torch::randn(s, gen) * 0.5);
  }
  out[0][0].zero_();  // a dead unit: its momentum must stay exactly 0
  return out;
}

Tensors MeanOverRanks(int64_t t, int world) {
  Tensors sum = Grads(0, t, true);
  for (int r = 1; r < world; ++r) {
    Tensors g = Grads(r, t, true);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += g[i];
  }
  for (auto& s : sum) s /= world;
  return sum;
}

// Sets this rank's gradients for step t: averaged steps get dyadic ones.
void SetGrads(OneBitOptimizer& opt, Tensors& params, int64_t t) {
  const Tensors g = Grads(Pg()->Rank(), t, opt.AveragesGradientsAt(t));
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = g[i].clone();
}

void ExpectBitEqual(const Tensors& a, const Tensors& b, const std::string& what) {
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(at::equal(a[i], b[i])) << what << ": tensor " << i << " differs by "
                                       << (a[i] - b[i]).abs().max().item<double>();
  }
}

// ---- the one-process reference ----

// DeepSpeed's compressed allreduce (Tang et al. 2021, Algorithm 1) for P
// ranks at once, laid out as lowbit's exchange: each rank's tensors divided
// by Adam's denominators, concatenated, padded to P chunks of c elements (c a multiple
// of 8), clamped to +-bound, 1 bit per element and one mean-|x| scale per chunk.
// Rank j averages chunk j, adds its server error and recompresses.
struct TwoPhase {
  int world;
  // The exact mean instead (a lossless codec): clamped and masked as the 1-bit one.
  bool exact = false;
  std::shared_ptr<compress::Compressor> sign = compress::MakeSignCompressor(0, 1);
  int64_t clamped = 0;  // elements the bound changed, over all exchanges
  Tensors worker;  // per rank, flat; undefined before the first exchange
  at::Tensor server;

  at::Tensor Decode(const at::Tensor& msg, int64_t n) {
    at::Tensor y = torch::empty({n});
    sign->Decode(msg, {}, y, false);
    return y;
  }

  // x[r][i]: rank r's tensor i. Returns the mean of tensor i, the same on every rank.
  // Elements never seen a gradient (v == 0) are 0; then the user's mask.
  static at::Tensor Masked(at::Tensor m, const at::Tensor& v, const at::Tensor& mask) {
    m.masked_fill_(v == 0, 0.0);
    return mask.defined() ? m.mul_(mask) : m;
  }

  Tensors Mean(const std::vector<Tensors>& x, const Tensors& denoms, const Tensors& v, const Tensors& masks,
               const std::vector<double>& bounds) {
    if (world == 1) {  // nothing to average, nothing compressed (as DeepSpeed)
      Tensors out;
      for (size_t i = 0; i < x[0].size(); ++i) out.push_back(Masked(x[0][i].clone(), v[i], masks[i]));
      return out;
    }
    if (exact) {
      Tensors out;
      for (size_t i = 0; i < denoms.size(); ++i) {
        at::Tensor sum = torch::zeros_like(x[0][i]);
        for (int r = 0; r < world; ++r) sum += (x[r][i] / denoms[i]).clamp(-bounds[i], bounds[i]);
        out.push_back(Masked(sum.div_(world).mul_(denoms[i]), v[i], masks[i]));
      }
      return out;
    }
    const int64_t total = [&] {
      int64_t n = 0;
      for (const auto& t : x[0]) n += t.numel();
      return n;
    }();
    const int64_t chunk = ((total + world - 1) / world + 7) / 8 * 8;
    Tensors padded(world);
    for (int r = 0; r < world; ++r) {
      Tensors parts;
      for (size_t i = 0; i < denoms.size(); ++i) {
        const at::Tensor normalised = x[r][i].reshape({-1}) / denoms[i].reshape({-1});
        clamped += (normalised.abs() > bounds[i]).sum().item<int64_t>();
        parts.push_back(normalised.clamp(-bounds[i], bounds[i]));
      }
      at::Tensor flat = torch::cat(parts);
      if (!worker.empty()) flat = flat + worker[r];
      padded[r] = torch::zeros({chunk * world});
      padded[r].narrow(0, 0, total).copy_(flat);
    }
    Tensors sent(world, torch::Tensor());
    for (auto& s : sent) s = torch::empty({chunk * world});
    at::Tensor mean = torch::empty({chunk * world});
    at::Tensor next_server = torch::empty({chunk * world});
    for (int j = 0; j < world; ++j) {
      at::Tensor avg = torch::zeros({chunk});
      for (int r = 0; r < world; ++r) {
        at::Tensor msg = sign->Encode(padded[r].narrow(0, j * chunk, chunk), {});
        sent[r].narrow(0, j * chunk, chunk).copy_(Decode(msg, chunk));
        sign->Decode(msg, {}, avg, true);
      }
      avg.div_(world);
      if (server.defined()) avg.add_(server.narrow(0, j * chunk, chunk));
      at::Tensor z = Decode(sign->Encode(avg, {}), chunk);
      next_server.narrow(0, j * chunk, chunk).copy_(avg - z);
      mean.narrow(0, j * chunk, chunk).copy_(z);
    }
    server = next_server;
    worker.resize(world);
    for (int r = 0; r < world; ++r) {
      worker[r] = padded[r].narrow(0, 0, total) - sent[r].narrow(0, 0, total);
    }
    Tensors out;
    int64_t offset = 0;
    for (size_t i = 0; i < denoms.size(); ++i) {
      out.push_back(Masked(mean.narrow(0, offset, x[0][i].numel()).view_as(x[0][i]) * denoms[i], v[i], masks[i]));
      offset += x[0][i].numel();
    }
    return out;
  }
};

double Bias(double beta, int64_t t) { return t > 0 ? 1.0 - std::pow(beta, static_cast<double>(t)) : 1.0; }

// One simulated rank's state.
struct RankState {
  Tensors p, m, v, synced, fresh;
  std::vector<double> lrs, coeff_freeze, last_factor;
};

constexpr double kLr = 2e-3, kB1 = 0.9, kB2 = 0.99, kEps = 1e-8;
const double kBound = 1.0 / std::sqrt(1.0 - kB2);  // the optimizers' clamp of normalised values

struct Reference {
  int world;
  std::vector<RankState> ranks;
  TwoPhase exchange{world};
  Tensors masks;
  int64_t clamped = 0;  // normalised elements the bound changed, exchanges and local steps

  explicit Reference(int p) : world(p), exchange{p} {
    const Tensors init = Detached(InitialParams());
    ranks.resize(p);
    for (auto& r : ranks) {
      for (const auto& t : init) {
        r.p.push_back(t.clone());
        for (Tensors* s : {&r.m, &r.v, &r.fresh}) s->push_back(torch::zeros_like(t));
        r.synced.push_back(t.clone());  // parameters at the last synchronisation
      }
      r.lrs.assign(init.size(), 0.0);
      r.coeff_freeze.assign(init.size(), 0.0);
      r.last_factor.assign(init.size(), 1.0);
    }
    masks.resize(init.size());
  }

  // Each rank's gradient of step t: the exact mean on averaged steps.
  Tensors Gradient(int r, int64_t t, bool averaged) { return averaged ? MeanOverRanks(t, world) : Grads(r, t, false); }

  // The compressed mean of f(rank, i), normalised by Adam's denominators and
  // clamped to +-scale / sqrt(1 - beta2).
  Tensors Exchange(const std::function<at::Tensor(int, size_t)>& f, const Tensors& denoms,
                   const std::vector<double>& scale = {}) {
    std::vector<Tensors> x(world);
    std::vector<double> bounds;
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < kShapes.size(); ++i) x[r].push_back(f(r, i));
    }
    for (size_t i = 0; i < kShapes.size(); ++i) bounds.push_back(kBound * (scale.empty() ? 1.0 : scale[i]));
    Tensors mean = exchange.Mean(x, denoms, ranks[0].v, masks, bounds);
    clamped += std::exchange(exchange.clamped, 0);
    return mean;
  }

  Tensors Denoms(int64_t bias_steps) {
    Tensors d;
    for (const auto& v : ranks[0].v) d.push_back((v.sqrt() / std::sqrt(Bias(kB2, bias_steps))).add_(kEps));
    return d;
  }

  // 1-bit Adam's and LAMB's exchange: each rank's beta1 m + (1 - beta1) g,
  // averaged in units of the denominators frozen at `freeze`.
  Tensors LocalMomentumMean(const std::vector<Tensors>& g, int64_t freeze) {
    return Exchange([&](int r, size_t i) { return ranks[r].m[i].mul(kB1).add_(g[r][i], 1 - kB1); }, Denoms(freeze));
  }

  // 1-bit Adam (weight decay wd, L2 or decoupled); with refresh > 0, every
  // refresh-th step after the freeze is a warm-up step whose variance decays
  // by beta2^refresh (OneBitAdamOptions::var_refresh).
  void OneBitAdamStep(int64_t t, int64_t freeze, double wd, bool decoupled, int64_t refresh = 0) {
    const bool refreshes = refresh > 0 && t > freeze && (t - freeze) % refresh == 0;
    const bool warmup = t <= freeze || refreshes;
    const double b2 = refreshes ? std::pow(kB2, static_cast<double>(refresh)) : kB2;
    // The steps v has seen: t, or the last refresh, or the freeze.
    const int64_t v_steps = t <= freeze ? t : refresh > 0 ? freeze + (t - freeze) / refresh * refresh : freeze;
    std::vector<Tensors> g(world);
    for (int r = 0; r < world; ++r) {
      g[r] = Gradient(r, t, warmup);
      for (size_t i = 0; i < g[r].size(); ++i) {
        if (wd != 0 && !decoupled) g[r][i] = g[r][i].add(ranks[r].p[i], wd);
      }
    }
    const Tensors mean = warmup ? Tensors{} : LocalMomentumMean(g, v_steps);
    for (int r = 0; r < world; ++r) {
      RankState& s = ranks[r];
      for (size_t i = 0; i < s.p.size(); ++i) {
        if (wd != 0 && decoupled) s.p[i].mul_(1 - kLr * wd);
        if (warmup) {
          s.m[i].mul_(kB1).add_(g[r][i], 1 - kB1);
          s.v[i].mul_(b2).addcmul_(g[r][i], g[r][i], 1 - b2);
        } else {
          s.m[i].copy_(mean[i]);
        }
        const at::Tensor denom = (s.v[i].sqrt() / std::sqrt(Bias(kB2, v_steps))).add_(kEps);
        s.p[i].addcdiv_(s.m[i], denom, -kLr / Bias(kB1, t));
      }
    }
  }

  // 0/1 Adam with L2 weight decay wd.
  void ZeroOneStep(int64_t t, ZeroOneAdamSchedule& sched, int64_t& k, double wd) {
    const bool local = sched.LocalPhase(t);
    if (t == sched.var_freeze_step + 1) exchange = TwoPhase{world};
    const bool refresh = sched.UpdatesVariance(t);
    std::vector<Tensors> g(world);
    for (int r = 0; r < world; ++r) {
      g[r] = Gradient(r, t, refresh);
      for (size_t i = 0; i < g[r].size(); ++i) g[r][i] = g[r][i].add(ranks[r].p[i], wd);
    }
    if (!local) {
      if (refresh) {
        ++k;
        for (auto& s : ranks) {
          for (size_t i = 0; i < s.p.size(); ++i) s.v[i].mul_(kB2).addcmul_(g[0][i], g[0][i], 1 - kB2);
        }
      }
      Tensors gbar = refresh ? g[0] : Exchange([&](int r, size_t i) { return g[r][i]; }, Denoms(k));
      for (auto& s : ranks) {
        for (size_t i = 0; i < s.p.size(); ++i) {
          s.m[i].mul_(kB1).add_(gbar[i], 1 - kB1);
          const at::Tensor denom = (s.v[i].sqrt() / std::sqrt(Bias(kB2, k))).add_(kEps);
          s.p[i].add_(s.m[i] / denom, -kLr / Bias(kB1, t));
        }
      }
    } else {
      const double lr_t = kLr / Bias(kB1, t);
      if (t == sched.var_freeze_step + 1) {
        for (auto& s : ranks) {
          for (size_t i = 0; i < s.p.size(); ++i) s.synced[i] = s.p[i].clone();
        }
      }
      std::vector<Tensors> denom(world);
      for (int r = 0; r < world; ++r) {
        RankState& s = ranks[r];
        for (size_t i = 0; i < s.p.size(); ++i) {
          denom[r].push_back((s.v[i].sqrt() / std::sqrt(Bias(kB2, k))).add_(kEps));
          const at::Tensor normalised = g[r][i] / denom[r][i];
          clamped += (normalised.abs() > kBound).sum().item<int64_t>();
          s.m[i] = s.m[i].mul(kB1).add_(normalised.clamp_(-kBound, kBound).mul_(denom[r][i]), 1 - kB1);
          const at::Tensor update = s.m[i] / denom[r][i];
          s.p[i] = s.p[i].add(update, -lr_t);
          s.lrs[i] += lr_t;
        }
      }
      if (sched.Synchronises(t)) {
        // u = p - synced, in momentum units; the mean lands on the synced parameters.
        const Tensors w = Exchange(
            [&](int r, size_t i) { return (ranks[r].p[i] - ranks[r].synced[i]).mul_(denom[r][i]); }, denom[0],
            ranks[0].lrs);
        for (int r = 0; r < world; ++r) {
          RankState& s = ranks[r];
          for (size_t i = 0; i < s.p.size(); ++i) {
            s.synced[i].add_(w[i] / denom[r][i]);
            s.p[i] = s.synced[i].clone();
            s.m[i] = w[i].div(-s.lrs[i]);
            s.lrs[i] = 0;
          }
        }
      }
    }
    sched.Advance(t);
  }

  // 1-bit LAMB with weight decay wd and DeepSpeed's default bounds.
  void LambStep(int64_t t, int64_t freeze, double wd, const OneBitLambOptions& o) {
    const bool warmup = t <= freeze;
    std::vector<Tensors> g(world);
    for (int r = 0; r < world; ++r) g[r] = Gradient(r, t, warmup);
    const Tensors mean = warmup ? Tensors{} : LocalMomentumMean(g, freeze);
    for (int r = 0; r < world; ++r) {
      RankState& s = ranks[r];
      for (size_t i = 0; i < s.p.size(); ++i) {
        if (warmup) {
          s.m[i].mul_(kB1).add_(g[r][i], 1 - kB1);
          s.v[i].mul_(kB2).addcmul_(g[r][i], g[r][i], 1 - kB2);
          const at::Tensor denom = (s.v[i].sqrt() / std::sqrt(Bias(kB2, t))).add_(kEps);
          at::Tensor update = (s.m[i] / denom).div_(Bias(kB1, t));
          if (wd > 0) update.add_(s.p[i], wd);
          const double pn = s.p[i].norm().item<double>(), un = update.norm().item<double>();
          const double coeff = pn > 0 && un > 0 ? std::clamp(pn / un, o.min_coeff(), o.max_coeff()) : 1.0;
          if (coeff != 1.0) s.coeff_freeze[i] = o.coeff_beta() * s.coeff_freeze[i] + (1 - o.coeff_beta()) * coeff;
          s.p[i].add_(update, -kLr * coeff);
        } else {
          if (t == freeze + 1) s.fresh[i].copy_(s.v[i]);
          const at::Tensor grad = mean[i].sub(s.m[i], kB1).div_(1 - kB1);
          s.fresh[i].mul_(kB2).addcmul_(grad, grad, 1 - kB2);
          s.m[i].copy_(mean[i]);
          const at::Tensor denom = (s.v[i].sqrt() / std::sqrt(Bias(kB2, freeze))).add_(kEps);
          const at::Tensor prelim = (s.m[i] / denom).div_(Bias(kB1, t));
          const at::Tensor update = wd > 0 ? prelim.add(s.p[i], wd) : prelim;
          const at::Tensor denom_fresh = (s.fresh[i].sqrt() / std::sqrt(Bias(kB2, t))).add_(kEps);
          double factor = (denom / denom_fresh).max().item<double>();
          if (wd > 0) {
            const double ratio = std::min(1.0, prelim.norm().item<double>() / update.norm().item<double>());
            factor = factor * ratio + (1 - ratio);
          }
          factor = std::clamp(factor, o.factor_min(), o.factor_max());
          factor = std::clamp(factor, s.last_factor[i] * (1 - o.factor_threshold()),
                              s.last_factor[i] * (1 + o.factor_threshold()));
          s.last_factor[i] = factor;
          s.p[i].add_(update, -kLr * s.coeff_freeze[i] * factor);
        }
      }
    }
  }
};

// ---- tests ----

TEST(OneBitOptimizers, WarmupEqualsTorchAdamOnAveragedGradients) {
  const int world = Pg()->Size();
  for (int mode = 0; mode < 4; ++mode) {  // Adam, Adam + L2, AdamW, 0/1 Adam (refreshing every step)
    SCOPED_TRACE(mode);
    const double wd = mode == 1 || mode == 2 ? 0.05 : 0.0;
    Tensors params = InitialParams();
    Tensors ref = InitialParams();
    std::unique_ptr<OneBitOptimizer> opt;
    if (mode < 3) {
      opt = std::make_unique<OneBitAdam>(
          params, Pg(), OneBitAdamOptions(kLr).betas({kB1, kB2}).weight_decay(wd).decoupled_weight_decay(mode == 2));
    } else {
      opt = std::make_unique<ZeroOneAdam>(params, Pg(),
                                          ZeroOneAdamOptions(kLr).betas({kB1, kB2}).var_update_scaler(1000));
    }
    std::unique_ptr<torch::optim::Optimizer> torch_opt;
    if (mode == 2) {
      torch_opt = std::make_unique<torch::optim::AdamW>(
          ref, torch::optim::AdamWOptions(kLr).betas({kB1, kB2}).weight_decay(wd));
    } else {
      torch_opt = std::make_unique<torch::optim::Adam>(
          ref, torch::optim::AdamOptions(kLr).betas({kB1, kB2}).weight_decay(wd));
    }
    for (int64_t t = 1; t <= 8; ++t) {
      ASSERT_TRUE(opt->AveragesGradientsAt(t));
      SetGrads(*opt, params, t);
      opt->step();
      const Tensors mean = MeanOverRanks(t, world);
      for (size_t i = 0; i < ref.size(); ++i) ref[i].mutable_grad() = mean[i];
      torch_opt->step();
      for (size_t i = 0; i < ref.size(); ++i) {
        EXPECT_LE((params[i] - ref[i]).abs().max().item<double>(), 1e-6) << "step " << t << " tensor " << i;
      }
    }
    EXPECT_FALSE(opt->LastStepStats().compressed);
  }
}

TEST(OneBitOptimizers, OneBitAdamEqualsTheOneProcessReference) {
  const int world = Pg()->Size();
  for (int mode = 0; mode < 3; ++mode) {  // plain, L2, decoupled + a momentum mask
    SCOPED_TRACE(mode);
    const double wd = mode == 0 ? 0.0 : 0.01;
    Tensors params = InitialParams();
    OneBitAdam opt(params, Pg(),
                   OneBitAdamOptions(kLr).betas({kB1, kB2}).weight_decay(wd).decoupled_weight_decay(mode == 2)
                       .freeze_step(3));
    Reference ref(world);
    if (mode == 2) {
      at::Tensor mask = (torch::arange(10) % 2).to(torch::kFloat);
      opt.SetMomentumMask(params[3], mask);
      ref.masks[3] = mask;
    }
    for (int64_t t = 1; t <= 10; ++t) {
      SetGrads(opt, params, t);
      opt.step();
      ref.OneBitAdamStep(t, 3, wd, mode == 2);
      EXPECT_EQ(opt.LastStepStats().compressed, t > 3 && world > 1);
      ExpectBitEqual(Detached(params), ref.ranks[Pg()->Rank()].p, "step " + std::to_string(t));
    }
    // (mode 2: the bit-for-bit match above is what checks the mask; the
    // reference zeroes the masked momenta, so an unmasked optimizer differs.)
    if (mode == 0) {  // the dead unit got no momentum from the 1-bit messages, so it never moved
      EXPECT_TRUE(at::equal(params[0][0].detach(), InitialParams()[0][0].detach()));
    }
  }
}

// var_refresh: after the freeze at 3, steps 5, 7 and 9 average the
// gradients again (SetGrads gives them dyadic ones, so the mean is exact) and
// refresh v with beta2^2; each is a warm-up step with no 1-bit exchange, the
// others the reference's compressed steps, with denominators corrected for
// the steps v has seen.
TEST(OneBitOptimizers, VarRefreshEqualsTheOneProcessReference) {
  const int world = Pg()->Size();
  Tensors params = InitialParams();
  OneBitAdam opt(params, Pg(), OneBitAdamOptions(kLr).betas({kB1, kB2}).freeze_step(3).var_refresh(2));
  EXPECT_NE(opt.Config().find("freeze_step=3,var_refresh=2,"), std::string::npos) << opt.Config();
  Reference ref(world);
  for (int64_t t = 1; t <= 10; ++t) {
    EXPECT_EQ(opt.AveragesGradientsAt(t), t <= 3 || t == 5 || t == 7 || t == 9) << t;
    SetGrads(opt, params, t);
    opt.step();
    ref.OneBitAdamStep(t, 3, 0.0, false, 2);
    EXPECT_EQ(opt.LastStepStats().compressed, (t == 4 || t == 6 || t == 8 || t == 10) && world > 1) << t;
    ExpectBitEqual(Detached(params), ref.ranks[Pg()->Rank()].p, "step " + std::to_string(t));
  }
}

// With a codec, the exchange is that hook's. A lossless one (top-k keeping
// every element) must give 1-bit Adam's equations with the exact mean of the
// normalised, clamped momenta; a lossy one sends fewer bytes and keeps the
// ranks identical.
TEST(OneBitOptimizers, CodecCarriesTheMomentumExchange) {
  const int world = Pg()->Size();
  const std::string lossless = "topk:density=1,warmup_steps=0,min_compress_numel=0,compress_1d=true";
  int64_t lossless_bytes = 0;
  // local_momentum: each rank keeps m_r = beta1 m_r + (1 - beta1) g_r. The mean
  // of the m_r is the momentum of the mean gradient, so with a lossless codec
  // (and no clamping, which the reference counts) the steps are the same.
  for (const bool local : {false, true}) {
    SCOPED_TRACE(local ? "local_momentum" : "shared momentum");
    Tensors params = InitialParams();
    OneBitAdam opt(params, Pg(),
                   OneBitAdamOptions(kLr).betas({kB1, kB2}).freeze_step(3).local_momentum(local).codec(lossless));
    EXPECT_NE(opt.Config().find("codec=topk:density=1"), std::string::npos) << opt.Config();
    Reference ref(world);
    ref.exchange.exact = true;
    for (int64_t t = 1; t <= 10; ++t) {
      SetGrads(opt, params, t);
      opt.step();
      ref.OneBitAdamStep(t, 3, 0.0, false);
      EXPECT_EQ(opt.LastStepStats().compressed, t > 3 && world > 1);
      for (size_t i = 0; i < params.size(); ++i) {
        // Shared momentum sums in the reference's order; local momenta round differently.
        ASSERT_TRUE(
            at::allclose(params[i].detach(), ref.ranks[Pg()->Rank()].p[i], local ? 1e-5 : 1e-6, local ? 1e-6 : 1e-7))
            << "step " << t << " tensor " << i << " differs by "
            << (params[i].detach() - ref.ranks[Pg()->Rank()].p[i]).abs().max().item<double>();
      }
    }
    if (local) ASSERT_EQ(ref.clamped, 0) << "the reference clamped; the local momenta would clamp otherwise";
    lossless_bytes = opt.LastStepStats().bytes_sent;
  }
  if (world == 1) return;
  // Lossy: top-k 10% of the normalised momentum. Fewer bytes than the lossless
  // codec's, and every rank holds the same parameters.
  Tensors lossy = InitialParams();
  OneBitAdam sparse(
      lossy, Pg(), OneBitAdamOptions(kLr).freeze_step(2).codec("topk:density=0.1,warmup_steps=0,min_compress_numel=0"));
  for (int64_t t = 1; t <= 6; ++t) {
    SetGrads(sparse, lossy, t);
    sparse.step();
  }
  EXPECT_TRUE(sparse.LastStepStats().compressed);
  // With a lossy codec, keeping each rank's momentum is another algorithm than
  // sharing the decoded mean (which top-k would zero at 90% of the elements).
  Tensors shared = InitialParams();
  Tensors kept = InitialParams();
  OneBitAdam shared_opt(
      shared, Pg(),
      OneBitAdamOptions(kLr).freeze_step(2).codec("topk:density=0.1,warmup_steps=0,min_compress_numel=0"));
  OneBitAdam kept_opt(kept, Pg(),
                      OneBitAdamOptions(kLr).freeze_step(2).local_momentum(true).codec(
                          "topk:density=0.1,warmup_steps=0,min_compress_numel=0"));
  for (int64_t t = 1; t <= 6; ++t) {
    SetGrads(shared_opt, shared, t);
    shared_opt.step();
    SetGrads(kept_opt, kept, t);
    kept_opt.step();
  }
  EXPECT_FALSE(at::equal(shared[2].detach(), kept[2].detach()));
  EXPECT_LT(sparse.LastStepStats().bytes_sent, lossless_bytes / 4);
  for (const at::Tensor& p : lossy) {
    at::Tensor max = p.detach().clone(), min = p.detach().clone();
    Pg()->AllReduce(max, comm::ReduceOp::kMax)->Wait();
    Pg()->AllReduce(min, comm::ReduceOp::kMin)->Wait();
    EXPECT_TRUE(at::equal(max, min)) << "the ranks' parameters differ";
  }
}

// The automatic warm-up: the earlier of 10 steps past the learning rate's warm-up and 10% of total_steps
// (rounded, at least 1), whichever is given, else 200.
TEST(OneBitOptimizers, FreezeStepFollowsTheRunLength) {
  Tensors p = InitialParams();
  const auto freeze = [&](OneBitAdamOptions o) {
    OneBitAdam opt(p, Pg(), o);
    int64_t t = 1;
    while (opt.AveragesGradientsAt(t)) ++t;
    return t - 1;
  };
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(600)), 60);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(2005)), 201);  // 200.5 rounds up
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(3)), 1);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(600).freeze_step(7)), 7);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(600).freeze_step(0)), 0);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr)), 200);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(2000).lr_warmup_steps(50)), 60);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).lr_warmup_steps(300)), 310);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(600).lr_warmup_steps(300)), 60);
  EXPECT_EQ(freeze(OneBitAdamOptions(kLr).total_steps(2000).lr_warmup_steps(50).freeze_step(7)), 7);
  // 0/1 Adam: the last variance refresh and the local-step interval's doubling follow the run's length too.
  const auto schedule = [&](ZeroOneAdamOptions o) { return ZeroOneAdam(p, Pg(), o).schedule(); };
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600)).var_freeze_step, 60);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600)).local_step_scaler, 200);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(2000)).local_step_scaler, 667);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600).var_freeze_step(9)).var_freeze_step, 9);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600).local_step_scaler(5)).local_step_scaler, 5);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr)).var_freeze_step, 200);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr)).local_step_scaler, 200);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600)).var_update_scaler, 30);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600).var_freeze_step(9)).var_update_scaler, 4);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600).var_freeze_step(1)).var_update_scaler, 1);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(600).var_update_scaler(7)).var_update_scaler, 7);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr)).var_update_scaler, 16);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(2000).lr_warmup_steps(50)).var_freeze_step, 60);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).total_steps(2000).lr_warmup_steps(50)).var_update_scaler, 30);
  EXPECT_EQ(schedule(ZeroOneAdamOptions(kLr).lr_warmup_steps(50).var_freeze_step(9)).var_freeze_step, 9);
}

TEST(OneBitOptimizers, ZeroOneAdamEqualsTheOneProcessReference) {
  const int world = Pg()->Size();
  Tensors params = InitialParams();
  ZeroOneAdamOptions o(kLr);
  o.betas({kB1, kB2}).weight_decay(0.01).var_freeze_step(12).var_update_scaler(2).local_step_scaler(2)
      .local_step_clipper(4);
  ZeroOneAdam opt(params, Pg(), o);
  Reference ref(world);
  ZeroOneAdamSchedule sched = opt.schedule();
  int64_t k = 0;
  int syncs = 0, compressed_gradient_steps = 0;
  for (int64_t t = 1; t <= 26; ++t) {
    SetGrads(opt, params, t);
    opt.step();
    syncs += sched.Synchronises(t);
    compressed_gradient_steps += !sched.LocalPhase(t) && !sched.UpdatesVariance(t);
    ref.ZeroOneStep(t, sched, k, 0.01);
    ExpectBitEqual(Detached(params), ref.ranks[Pg()->Rank()].p, "step " + std::to_string(t));
  }
  // The data reach the clamp of normalised values (in the exchanges and the local steps).
  if (world > 1) EXPECT_GT(ref.clamped, 0);
  EXPECT_EQ(opt.variance_updates(), k);
  EXPECT_GE(syncs, 4);
  EXPECT_GE(compressed_gradient_steps, 3);
}

TEST(OneBitOptimizers, OneBitLambEqualsTheOneProcessReference) {
  const int world = Pg()->Size();
  for (double wd : {0.0, 0.01}) {
    SCOPED_TRACE(wd);
    Tensors params = InitialParams();
    OneBitLambOptions o(kLr);
    o.betas({kB1, kB2}).weight_decay(wd).freeze_step(4);
    OneBitLamb opt(params, Pg(), o);
    Reference ref(world);
    for (int64_t t = 1; t <= 10; ++t) {
      SetGrads(opt, params, t);
      opt.step();
      ref.LambStep(t, 4, wd, o);
      ExpectBitEqual(Detached(params), ref.ranks[Pg()->Rank()].p, "step " + std::to_string(t));
    }
  }
}

// The definition (Lu et al. 2022; DeepSpeed): the variance is refreshed on
// steps t with t % interval == 0, the interval doubling after every kappa
// refreshes; local steps synchronise when t % interval == 0, the interval
// doubling (up to the clipper) after every scaler local steps.
TEST(OneBitOptimizers, ZeroOneAdamSchedules) {
  ZeroOneAdamSchedule s;
  s.var_freeze_step = 60;
  s.var_update_scaler = 4;
  s.local_step_scaler = 3;
  s.local_step_clipper = 4;
  std::vector<int64_t> refreshes, syncs;
  for (int64_t t = 1; t <= 90; ++t) {
    if (s.UpdatesVariance(t)) refreshes.push_back(t);
    if (s.Synchronises(t)) syncs.push_back(t);
    s.Advance(t);
  }
  EXPECT_EQ(refreshes, (std::vector<int64_t>{1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32, 40, 48, 56}));
  EXPECT_EQ(syncs, (std::vector<int64_t>{61, 62, 63, 64, 66, 68, 72, 76, 80, 84, 88}));
}

TEST(OneBitOptimizers, OneBitLambCoefficientsStayInTheirBounds) {
  Tensors params = InitialParams();
  OneBitLambOptions o(0.05);
  o.freeze_step(6).min_coeff(0.5).max_coeff(2.0).factor_min(0.8).factor_max(1.5).factor_threshold(0.05);
  OneBitLamb opt(params, Pg(), o);
  int clamped = 0, factor_moves = 0;
  std::vector<double> last(params.size(), 1.0);
  for (int64_t t = 1; t <= 16; ++t) {
    SetGrads(opt, params, t);
    opt.step();
    const std::vector<double> coeff = opt.LastCoefficients();
    const std::vector<double> frozen = opt.FrozenCoefficients();
    for (size_t i = 0; i < params.size(); ++i) {
      if (t <= 6) {
        EXPECT_GE(coeff[i], 0.5);
        EXPECT_LE(coeff[i], 2.0);
        clamped += coeff[i] == 0.5 || coeff[i] == 2.0;
      } else {
        const double factor = coeff[i] / frozen[i];
        EXPECT_GE(factor, 0.8 - 1e-12);
        EXPECT_LE(factor, 1.5 + 1e-12);
        EXPECT_LE(std::abs(factor - last[i]), 0.05 * last[i] + 1e-12) << "step " << t << " tensor " << i;
        factor_moves += std::abs(factor - last[i]) > 1e-9;
        last[i] = factor;
      }
    }
  }
  EXPECT_GT(clamped, 0);       // the bounds were reached, so the test can fail
  EXPECT_GT(factor_moves, 0);
}

// A state saved mid-run restores an optimizer that continues bit for bit.
TEST(OneBitOptimizers, StateRoundTripContinuesExactly) {
  for (int kind = 0; kind < 3; ++kind) {
    SCOPED_TRACE(kind);
    auto make = [&](Tensors& p) -> std::unique_ptr<OneBitOptimizer> {
      if (kind == 0) return std::make_unique<OneBitAdam>(p, Pg(), OneBitAdamOptions(kLr).freeze_step(3));
      if (kind == 1) {
        return std::make_unique<ZeroOneAdam>(
            p, Pg(), ZeroOneAdamOptions(kLr).var_freeze_step(5).var_update_scaler(2).local_step_scaler(2));
      }
      return std::make_unique<OneBitLamb>(p, Pg(), OneBitLambOptions(kLr).freeze_step(3));
    };
    Tensors a = InitialParams();
    auto opt_a = make(a);
    for (int64_t t = 1; t <= 9; ++t) {  // 0/1 Adam: step 9 is local, between synchronisations
      SetGrads(*opt_a, a, t);
      opt_a->step();
    }
    torch::serialize::OutputArchive archive;
    opt_a->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    // 0/1 Adam's parameters differ across ranks between synchronisations; its
    // load() restores them, so b starts from the initial ones there.
    Tensors b = InitialParams();
    if (kind != 1) {
      for (size_t i = 0; i < b.size(); ++i) b[i].detach().copy_(a[i].detach());
    }
    auto opt_b = make(b);
    std::istringstream in(bytes.str());
    torch::serialize::InputArchive loaded;
    loaded.load_from(in);
    opt_b->load(loaded);
    EXPECT_EQ(opt_b->steps(), 9);
    ExpectBitEqual(Detached(a), Detached(b), "after load");
    for (int64_t t = 10; t <= 17; ++t) {
      SetGrads(*opt_a, a, t);
      opt_a->step();
      SetGrads(*opt_b, b, t);
      opt_b->step();
      ExpectBitEqual(Detached(a), Detached(b), "step " + std::to_string(t));
    }
  }
}

// The automatic warm-up follows the run's length: a checkpoint of a 600-step run (freeze 60) resumed as a
// 2000-step one (freeze 200) would move the freeze silently, so load() refuses it, naming both.
TEST(OneBitOptimizers, ResumeWithAnotherWarmupIsRefused) {
  const auto saved = [](OneBitOptimizer& opt, Tensors& p) {
    for (int64_t t = 1; t <= 3; ++t) {
      SetGrads(opt, p, t);
      opt.step();
    }
    torch::serialize::OutputArchive archive;
    opt.save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    return bytes.str();
  };
  const auto load = [](OneBitOptimizer& opt, const std::string& bytes) {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    opt.load(archive);
  };
  Tensors a = InitialParams();
  OneBitAdam short_run(a, Pg(), OneBitAdamOptions(kLr).total_steps(600));
  const std::string bytes = saved(short_run, a);
  Tensors b = InitialParams();
  OneBitAdam longer(b, Pg(), OneBitAdamOptions(kLr).total_steps(2000));
  ExpectError([&] { load(longer, bytes); },
              "OneBitAdam: the checkpoint's warm-up ends at step 60 (freeze_step), this optimizer's at step 200; "
              "resume with freeze_step 60");
  OneBitAdam pinned(b, Pg(), OneBitAdamOptions(kLr).total_steps(2000).freeze_step(60));
  load(pinned, bytes);
  EXPECT_EQ(pinned.steps(), 3);
  Tensors c = InitialParams();
  ZeroOneAdam zo_short(c, Pg(), ZeroOneAdamOptions(kLr).total_steps(600));
  const std::string zo_bytes = saved(zo_short, c);
  Tensors d = InitialParams();
  ZeroOneAdam zo_warm(d, Pg(), ZeroOneAdamOptions(kLr).total_steps(2000).lr_warmup_steps(100));
  ExpectError([&] { load(zo_warm, zo_bytes); },
              "ZeroOneAdam: the checkpoint's warm-up ends at step 60 (var_freeze_step), this optimizer's at step 110");
}

TEST(OneBitOptimizers, NonFiniteGradientOnOneRankSkipsTheStepEverywhere) {
  if (Pg()->Size() == 1) GTEST_SKIP() << "needs two ranks";
  Tensors params = InitialParams();
  OneBitAdam opt(params, Pg(), OneBitAdamOptions(kLr).freeze_step(2));
  for (int64_t t = 1; t <= 3; ++t) {
    SetGrads(opt, params, t);
    opt.step();
  }
  const Tensors before = Detached(params);
  SetGrads(opt, params, 4);
  if (Pg()->Rank() == Pg()->Size() - 1) params[2].mutable_grad()[0][0] = std::nan("");
  opt.step();
  EXPECT_TRUE(opt.LastStepStats().skipped);
  EXPECT_EQ(opt.steps(), 3);
  ExpectBitEqual(Detached(params), before, "after the skipped step");
  SetGrads(opt, params, 4);
  opt.step();
  EXPECT_FALSE(opt.LastStepStats().skipped);
  EXPECT_EQ(opt.steps(), 4);
}

TEST(OneBitOptimizers, BadSettingsAreRejected) {
  Tensors p = InitialParams();
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).freeze_step(-2)); },
              "OneBitAdam: freeze_step must be >= 0, or -1 for lr_warmup_steps + 10 or 10% of total_steps, the "
              "earlier; got -2");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).lr_warmup_steps(-3)); },
              "OneBitAdam: lr_warmup_steps must be >= 0 (0: none or unknown), got -3");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).total_steps(-5)); },
              "OneBitAdam: total_steps must be >= 0 (0: unknown), got -5");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).var_refresh(-1)); },
              "OneBitAdam: var_refresh must be >= 0 (0: never), got -1");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(0.0)); }, "lr must be > 0, got 0");
  ExpectError([&] { OneBitLamb(p, Pg(), OneBitLambOptions(-1.0)); }, "lr must be > 0, got -1");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).betas({1.0, 0.999})); },
               "beta1 must be in [0, 1), got 1");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).betas({0.9, -0.1})); },
               "beta2 must be in [0, 1), got -0.1");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).var_freeze_step(-5)); },
              "ZeroOneAdam: var_freeze_step must be >= 0, or -1 for lr_warmup_steps + 10 or 10% of total_steps, the "
              "earlier; got -5");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).lr_warmup_steps(-1)); },
              "ZeroOneAdam: lr_warmup_steps must be >= 0 (0: none or unknown), got -1");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).var_update_scaler(-3)); },
              "ZeroOneAdam: var_update_scaler must be >= 1, or -1 for var_freeze_step / 2; got -3");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).local_step_scaler(0)); },
              "ZeroOneAdam: local_step_scaler must be >= 1, or -1 for total_steps / 3; got 0");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).total_steps(-1)); },
              "ZeroOneAdam: total_steps must be >= 0 (0: unknown), got -1");
  ExpectError([&] { OneBitLamb(p, Pg(), OneBitLambOptions(kLr).freeze_step(-2)); }, "freeze_step must be >= 0, got -2");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).eps(0)); }, "eps must be > 0, got 0");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).block(12)); },
               "block must be 0 or a positive multiple of 8, got 12");
  ExpectError([&] { OneBitAdam({torch::zeros({3}, torch::kDouble)}, Pg()); }, "parameter 0 has dtype Double");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).codec("topk:density=2")); },
              "OneBitAdam: codec 'topk:density=2':");
  ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).codec("allreduce")); },
              "OneBitAdam: codec must compress, got 'allreduce'");
  ExpectError([&] { ZeroOneAdam(p, Pg(), ZeroOneAdamOptions(kLr).codec("nosuchhook")); },
              "ZeroOneAdam: codec 'nosuchhook':");
  OneBitAdam opt(p, Pg());
  ExpectError([&] { opt.SetMomentumMask(p[0], torch::ones({3})); }, "momentum mask of parameter 0 has shape [3]");
  ExpectError([&] { opt.SetMomentumMask(torch::ones({3}), torch::ones({3})); }, "is not one of the 4 parameters");
  if (Pg()->Size() > 1) {
    // Ranks given different settings fail at construction, on every rank.
    const int64_t freeze = Pg()->Rank() == 1 ? 7 : 5;
    ExpectError([&] { OneBitAdam(p, Pg(), OneBitAdamOptions(kLr).freeze_step(freeze)); }, "on rank 1 differs");
  }
}

// ---- with DistributedDataParallel ----

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(6, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 3));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2->forward(torch::tanh(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Tiny);

std::pair<torch::Tensor, torch::Tensor> Batch(int rank, int64_t t, int micro) {
  torch::Generator gen = at::detail::createCPUGenerator(100 * t + 10 * rank + micro);
  return {torch::randn({4, 6}, gen), torch::randint(0, 3, {4}, gen)};
}

// The gradients rank r computes at step t from `micro` micro-batches, summed.
Tensors LocalGradients(Tiny& model, int rank, int64_t t, int micro) {
  model->zero_grad();
  for (int k = 0; k < micro; ++k) {
    auto [x, y] = Batch(rank, t, k);
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
  }
  Tensors g;
  for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
  return g;
}

// Warm-up through DDP (NoSync accumulation, phase hook averaging) equals
// torch::optim::Adam on the averaged summed gradients; in the compression
// phase DDP sends nothing and leaves each rank its own gradients.
// L-GreCo as the codec: its decisions reach OnCodecAdapt's callback, naming the
// parameters as the module does (the optimizer is built on DDP).
TEST(OneBitOptimizers, AdaptiveCodecNamesTheModulesParameters) {
  if (Pg()->Size() == 1) GTEST_SKIP() << "one rank exchanges nothing";
  torch::manual_seed(3);
  Tiny model;
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  // A budget 100 times the uniform setting's error: the cheapest densities win, so decisions change.
  OneBitAdam opt(model->parameters(), ddp,
                 OneBitAdamOptions(kLr).freeze_step(2).local_momentum(true).codec(
                     "adaptive_topk:density=0.5,min_compress_numel=0,adapt_period=2,adapt_window=1,adapt_alpha=100"));
  std::vector<std::string> decisions;
  opt.OnCodecAdapt([&](int64_t, const std::string& changes) { decisions.push_back(changes); });
  for (int64_t t = 1; t <= 8; ++t) {
    opt.zero_grad();
    auto [x, y] = Batch(Pg()->Rank(), t, 0);
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt.step();
  }
  ASSERT_FALSE(decisions.empty());
  EXPECT_NE(decisions.front().find("fc1.weight"), std::string::npos) << decisions.front();
  EXPECT_EQ(decisions.front().find("p0"), std::string::npos) << decisions.front();
  ExpectError([&] { opt.OnCodecAdapt({}); }, "OnCodecAdapt must come before the first step(); 8 steps taken");
}

TEST(OneBitOptimizers, OwnsCommunicationUnderDdpWithNoSync) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  torch::manual_seed(3);
  Tiny model;
  torch::manual_seed(3);
  Tiny reference;
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  OneBitAdam opt(model->parameters(), ddp, OneBitAdamOptions(kLr).freeze_step(3));
  EXPECT_EQ(ddp.comm_hook().Name(), "optimizer");
  torch::optim::Adam torch_opt(reference->parameters(), torch::optim::AdamOptions(kLr));
  for (int64_t t = 1; t <= 5; ++t) {
    opt.zero_grad();
    {
      auto guard = ddp.NoSync();
      auto [x, y] = Batch(rank, t, 0);
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    }
    auto [x, y] = Batch(rank, t, 1);
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    if (t <= 3) {
      if (world > 1) EXPECT_GT(ddp.LastStepStats().bytes_sent, 0);
      Tensors mean = LocalGradients(reference, 0, t, 2);
      for (int r = 1; r < world; ++r) {
        const Tensors g = LocalGradients(reference, r, t, 2);
        for (size_t i = 0; i < mean.size(); ++i) mean[i] += g[i];
      }
      for (size_t i = 0; i < mean.size(); ++i) reference->parameters()[i].mutable_grad() = mean[i] / world;
      torch_opt.step();
      opt.step();
      const auto got = model->parameters(), want = reference->parameters();
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_LE((got[i] - want[i]).abs().max().item<double>(), 1e-6) << "step " << t << " tensor " << i;
      }
    } else {
      EXPECT_EQ(ddp.LastStepStats().bytes_sent, 0) << "step " << t;
      for (size_t i = 0; i < reference->parameters().size(); ++i) {
        reference->parameters()[i].detach().copy_(model->parameters()[i].detach());
      }
      const Tensors local = LocalGradients(reference, rank, t, 2);
      const auto got = model->parameters();
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_LE((got[i].grad() - local[i]).abs().max().item<double>(), 1e-6) << "step " << t << " tensor " << i;
      }
      opt.step();
      EXPECT_EQ(opt.LastStepStats().compressed, world > 1);
      if (world > 1) EXPECT_GT(opt.LastStepStats().bytes_sent, 0);
      // DDP's step counts the optimizer's exchange, which runs after backward.
      EXPECT_EQ(ddp.LastStepStats().exchange_bytes_sent, 0) << "step " << t;
      EXPECT_EQ(ddp.LastStepStats().bytes_sent, opt.LastStepStats().bytes_sent) << "step " << t;
    }
  }
}

std::shared_ptr<comm::CommHook> CastHook(at::ScalarType dtype) {
  compress::CompressionHookOptions o;
  o.compressor = compress::MakeCastCompressor(dtype);
  o.min_compress_numel = 0;
  o.compress_1d = true;
  return std::make_shared<compress::CompressionHook>(Pg(), o);
}

// An averaging hook carries the warm-up's exchange: with fp16, every averaged
// gradient is a fp16 number (a fp32 mean of these gradients is not) within
// fp16 rounding of the true mean; the compression phase still sends nothing
// through DDP.
TEST(OneBitOptimizers, AveragingHookCarriesTheWarmup) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  torch::manual_seed(3);
  Tiny model;
  torch::manual_seed(3);
  Tiny reference;
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  OneBitAdam opt(model->parameters(), ddp, OneBitAdamOptions(kLr).freeze_step(2).averaging_hook(CastHook(at::kHalf)));
  EXPECT_NE(opt.Config().find("averaging_hook=compression(fp16,"), std::string::npos) << opt.Config();
  for (int64_t t = 1; t <= 3; ++t) {
    for (size_t i = 0; i < reference->parameters().size(); ++i) {
      reference->parameters()[i].detach().copy_(model->parameters()[i].detach());
    }
    Tensors mean = LocalGradients(reference, 0, t, 1);
    for (int r = 1; r < world; ++r) {
      const Tensors g = LocalGradients(reference, r, t, 1);
      for (size_t i = 0; i < mean.size(); ++i) mean[i] += g[i];
    }
    opt.zero_grad();
    auto [x, y] = Batch(rank, t, 0);
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    const auto got = model->parameters();
    if (t <= 2) {
      bool fp32_mean_is_fp16 = true;
      for (size_t i = 0; i < got.size(); ++i) {
        const at::Tensor want = mean[i] / world;
        const at::Tensor g = got[i].grad();
        EXPECT_TRUE(at::equal(g, g.to(at::kHalf).to(at::kFloat))) << "step " << t << " tensor " << i;
        EXPECT_TRUE(at::allclose(g, want, 2e-3, 1e-4)) << "step " << t << " tensor " << i << " differs by "
                                                       << (g - want).abs().max().item<double>();
        fp32_mean_is_fp16 = fp32_mean_is_fp16 && at::equal(want, want.to(at::kHalf).to(at::kFloat));
      }
      EXPECT_FALSE(fp32_mean_is_fp16) << "the check above would pass without the hook";
    } else {
      EXPECT_EQ(ddp.LastStepStats().bytes_sent, 0) << "step " << t;
    }
    opt.step();
  }
}

// The averaging hook's settings are compared across ranks, it needs DDP, and
// its state (here qsgd's error feedback) is saved and restored with the
// optimizer; an archive without it is refused by an optimizer that has one.
TEST(OneBitOptimizers, AveragingHookIsCheckedAndSaved) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  torch::manual_seed(3);
  Tiny model;
  ExpectError([&] { OneBitLamb(model->parameters(), Pg(), OneBitLambOptions().averaging_hook(CastHook(at::kHalf))); },
              "needs the optimizer built on a DistributedDataParallel");
  if (world > 1) {
    comm::DistributedDataParallel ddp(model.ptr(), Pg());
    ExpectError([&] {
      OneBitLamb(model->parameters(), ddp,
                 OneBitLambOptions().averaging_hook(CastHook(rank == 1 ? at::kBFloat16 : at::kHalf)));
    }, "averaging_hook=");
  }
  auto qsgd = [] {
    compress::CompressionHookOptions o;
    o.compressor = compress::MakeQsgdCompressor(4, 16);
    o.min_compress_numel = 0;
    return std::make_shared<compress::CompressionHook>(Pg(), o);
  };
  std::stringstream saved, plain;
  comm::HookState want;
  {
    comm::DistributedDataParallel ddp(model.ptr(), Pg());
    auto hook = qsgd();
    OneBitAdam opt(model->parameters(), ddp, OneBitAdamOptions(kLr).freeze_step(5).averaging_hook(hook));
    for (int64_t t = 1; t <= 2; ++t) {
      opt.zero_grad();
      auto [x, y] = Batch(rank, t, 0);
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt.step();
    }
    want = hook->StateDict();
    ASSERT_GT(want.size(), 2u);
    torch::save(opt, saved);
  }
  {
    Tiny other;
    comm::DistributedDataParallel ddp(other.ptr(), Pg());
    OneBitAdam without(other->parameters(), ddp, OneBitAdamOptions(kLr).freeze_step(5));
    torch::save(without, plain);
  }
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  auto hook = qsgd();
  OneBitAdam opt(model->parameters(), ddp, OneBitAdamOptions(kLr).freeze_step(5).averaging_hook(hook));
  torch::load(opt, saved);
  const comm::HookState got = hook->StateDict();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_TRUE(at::equal(got[i].second, want[i].second)) << got[i].first;
  }
  ExpectError([&] { torch::load(opt, plain); }, "holds no state for it");
}

// The 1-bit optimizers own DDP's hook: registering another one afterwards
// would silently break them, so it is refused, naming the optimizer.
TEST(OneBitOptimizers, AnotherHookUnderTheOptimizerIsRefused) {
  torch::manual_seed(3);
  Tiny model;
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  EXPECT_EQ(ddp.comm_hook_owner(), "");
  OneBitLamb opt(model->parameters(), ddp, OneBitLambOptions(kLr));
  EXPECT_EQ(ddp.comm_hook_owner(), "OneBitLamb");
  lowbit::testing::ExpectError([&] { ddp.RegisterCommHook(compress::MakeCommHook(Pg(), "qsgd")); },
                               "RegisterCommHook: the comm hook belongs to OneBitLamb, which does its own exchange; "
                               "registering 'qsgd' would silently break it (give that exchange to "
                               "OneBitLambOptions::averaging_hook instead)");
  EXPECT_EQ(ddp.comm_hook().Name(), "optimizer");
  // Built on a DDP that already has the user's hook, it would drop it.
  torch::manual_seed(3);
  Tiny other;
  comm::DistributedDataParallel hooked(other.ptr(), Pg());
  hooked.RegisterCommHook(compress::MakeCommHook(Pg(), "fp16"));
  lowbit::testing::ExpectError([&] { OneBitAdam late(other->parameters(), hooked, OneBitAdamOptions(kLr)); },
                               "OneBitAdam does its own exchange, but comm hook 'compression(fp16");
  lowbit::testing::ExpectError([&] { OneBitAdam late(other->parameters(), hooked, OneBitAdamOptions(kLr)); },
                               "(give that exchange to OneBitAdamOptions::averaging_hook instead)");
}

}  // namespace
}  // namespace lowbit::optim
