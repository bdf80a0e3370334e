#include "lowbit/optimizers/onebit_lamb.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/comm/distributed_data_parallel.h"

namespace lowbit::optim {

OneBitLamb::OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
                       OneBitLambOptions defaults)
    : OneBitLamb(std::move(groups), ddp.shared_process_group(), &ddp, defaults) {}

OneBitLamb::OneBitLamb(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, OneBitLambOptions defaults)
    : OneBitLamb({torch::optim::OptimizerParamGroup(std::move(params))}, ddp.shared_process_group(), &ddp, defaults) {}

OneBitLamb::OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                       OneBitLambOptions defaults)
    : OneBitLamb(std::move(groups), std::move(pg), nullptr, defaults) {}

OneBitLamb::OneBitLamb(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg,
                       OneBitLambOptions defaults)
    : OneBitLamb({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(pg), nullptr, defaults) {}

OneBitLamb::OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                       comm::DistributedDataParallel* ddp, const OneBitLambOptions& defaults)
    : OneBitOptimizer(std::move(groups), std::make_unique<OneBitLambOptions>(defaults), std::move(pg), ddp),
      options_(defaults) {
  const OneBitLambOptions& d = defaults;
  LOWBIT_CHECK(d.freeze_step() >= 0, "OneBitLamb: freeze_step must be >= 0, got ", d.freeze_step());
  LOWBIT_CHECK(d.min_coeff() > 0 && d.min_coeff() <= d.max_coeff(), "OneBitLamb: need 0 < min_coeff <= max_coeff, got ",
               d.min_coeff(), " and ", d.max_coeff());
  LOWBIT_CHECK(d.coeff_beta() >= 0 && d.coeff_beta() < 1, "OneBitLamb: coeff_beta must be in [0, 1), got ",
               d.coeff_beta());
  LOWBIT_CHECK(d.factor_min() > 0 && d.factor_min() <= d.factor_max(),
               "OneBitLamb: need 0 < factor_min <= factor_max, got ", d.factor_min(), " and ", d.factor_max());
  LOWBIT_CHECK(d.factor_threshold() >= 0, "OneBitLamb: factor_threshold must be >= 0, got ", d.factor_threshold());
  std::string groups_config;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const OneBitLambOptions&>(param_groups_[g].options());
    absl::StrAppend(&groups_config, CheckGroup("OneBitLamb", g, o.lr(), o.betas(), o.eps(), o.weight_decay()));
  }
  Initialize("OneBitLamb",
             absl::StrCat("freeze_step=", d.freeze_step(), ",bias_correction=", d.bias_correction(),
                          ",block=", d.block(), ",coeff=", d.min_coeff(), "/", d.max_coeff(), "/", d.coeff_beta(),
                          ",factor=", d.factor_min(), "/", d.factor_max(), "/", d.factor_threshold(), groups_config),
             d.block(), d.averaging_hook(), d.codec());
  last_coeff_.assign(params().size(), 1.0);
}

std::vector<double> OneBitLamb::FrozenCoefficients() const {
  std::vector<double> out;
  for (size_t i = 0; i < params().size(); ++i) out.push_back(ScalarOr(i, "coeff_freeze", 0.0));
  return out;
}

bool OneBitLamb::Step(int64_t t, const std::vector<at::Tensor>& grads) {
  const size_t n = params().size();
  const bool warmup = t <= options_.freeze_step();
  const bool bias = options_.bias_correction();
  std::vector<at::Tensor> averaged(n);
  if (!warmup) {
    std::vector<at::Tensor> v(n), denom(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& o = static_cast<const OneBitLambOptions&>(GroupOptions(i));
      const auto [beta1, beta2] = o.betas();
      averaged[i] = State(i, "exp_avg").mul(beta1).add_(grads[i], 1.0 - beta1);
      v[i] = State(i, "exp_avg_sq");
      denom[i] = (v[i].sqrt() / std::sqrt(BiasCorrection(beta2, options_.freeze_step(), bias))).add_(o.eps());
    }
    if (!CompressedMean(averaged, denom, v, NormalisedBounds())) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitLambOptions&>(GroupOptions(i));
    const auto [beta1, beta2] = o.betas();
    at::Tensor p = params()[i];
    at::Tensor& m = State(i, "exp_avg");
    at::Tensor& v = State(i, "exp_avg_sq");
    double& coeff_freeze = Scalar(i, "coeff_freeze", 0.0);
    double coeff = 1.0;
    if (warmup) {
      m.mul_(beta1).add_(grads[i], 1.0 - beta1);
      v.mul_(beta2).addcmul_(grads[i], grads[i], 1.0 - beta2);
      const at::Tensor denom = (v.sqrt() / std::sqrt(BiasCorrection(beta2, t, bias))).add_(o.eps());
      at::Tensor update = (m / denom).div_(BiasCorrection(beta1, t, bias));
      if (o.weight_decay() > 0.0) update.add_(p, o.weight_decay());
      const double weight_norm = p.norm().item<double>();
      const double update_norm = update.norm().item<double>();
      if (weight_norm > 0.0 && update_norm > 0.0) {
        coeff = std::clamp(weight_norm / update_norm, options_.min_coeff(), options_.max_coeff());
      }
      if (coeff != 1.0) coeff_freeze = options_.coeff_beta() * coeff_freeze + (1.0 - options_.coeff_beta()) * coeff;
      p.add_(update, -o.lr() * coeff);
    } else {
      // The fresh variance starts from the frozen one at the first compressed step.
      if (!HasState(i, "exp_avg_sq_fresh")) State(i, "exp_avg_sq_fresh").copy_(v);
      at::Tensor& fresh = State(i, "exp_avg_sq_fresh");
      double& last_factor = Scalar(i, "last_factor", 1.0);
      const at::Tensor grad = averaged[i].sub(m, beta1).div_(1.0 - beta1);
      fresh.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
      m.copy_(averaged[i]);
      const at::Tensor denom =
          (v.sqrt() / std::sqrt(BiasCorrection(beta2, options_.freeze_step(), bias))).add_(o.eps());
      const at::Tensor prelim = (m / denom).div_(BiasCorrection(beta1, t, bias));
      const at::Tensor update = o.weight_decay() > 0.0 ? prelim.add(p, o.weight_decay()) : prelim;
      const at::Tensor denom_fresh = (fresh.sqrt() / std::sqrt(BiasCorrection(beta2, t, bias))).add_(o.eps());
      double factor = (denom / denom_fresh).max().item<double>();
      if (o.weight_decay() > 0.0) {
        const double update_norm = update.norm().item<double>();
        const double ratio = update_norm > 0.0 ? std::min(1.0, prelim.norm().item<double>() / update_norm) : 1.0;
        factor = factor * ratio + (1.0 - ratio);
      }
      factor = std::clamp(factor, options_.factor_min(), options_.factor_max());
      factor = std::clamp(factor, last_factor * (1.0 - options_.factor_threshold()),
                          last_factor * (1.0 + options_.factor_threshold()));
      last_factor = factor;
      coeff = coeff_freeze * factor;
      p.add_(update, -o.lr() * coeff);
    }
    last_coeff_[i] = coeff;
  }
  return true;
}

}  // namespace lowbit::optim
