#include "lowbit/optimizers/onebit_adam.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/comm/distributed_data_parallel.h"

namespace lowbit::optim {

OneBitAdam::OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
                       OneBitAdamOptions defaults)
    : OneBitAdam(std::move(groups), ddp.shared_process_group(), &ddp, defaults) {}

OneBitAdam::OneBitAdam(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, OneBitAdamOptions defaults)
    : OneBitAdam({torch::optim::OptimizerParamGroup(std::move(params))}, ddp.shared_process_group(), &ddp, defaults) {}

OneBitAdam::OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                       OneBitAdamOptions defaults)
    : OneBitAdam(std::move(groups), std::move(pg), nullptr, defaults) {}

OneBitAdam::OneBitAdam(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg,
                       OneBitAdamOptions defaults)
    : OneBitAdam({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(pg), nullptr, defaults) {}

OneBitAdam::OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                       comm::DistributedDataParallel* ddp, const OneBitAdamOptions& defaults)
    : OneBitOptimizer(std::move(groups), std::make_unique<OneBitAdamOptions>(defaults), std::move(pg), ddp),
      freeze_step_(defaults.freeze_step()),
      bias_correction_(defaults.bias_correction()) {
  LOWBIT_CHECK(freeze_step_ >= 0, "OneBitAdam: freeze_step must be >= 0, got ", freeze_step_);
  std::string groups_config;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const OneBitAdamOptions&>(param_groups_[g].options());
    absl::StrAppend(&groups_config, CheckGroup("OneBitAdam", g, o.lr(), o.betas(), o.eps(), o.weight_decay()), "/",
                    o.decoupled_weight_decay());
  }
  Initialize("OneBitAdam",
             absl::StrCat("freeze_step=", freeze_step_, ",bias_correction=", bias_correction_,
                          ",block=", defaults.block(), groups_config),
             defaults.block(), defaults.averaging_hook());
}

bool OneBitAdam::Step(int64_t t, const std::vector<at::Tensor>& grads) {
  const size_t n = params().size();
  const bool warmup = t <= freeze_step_;
  std::vector<at::Tensor> g(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    g[i] = o.weight_decay() != 0.0 && !o.decoupled_weight_decay() ? grads[i].add(params()[i], o.weight_decay())
                                                                    : grads[i];
  }
  // Adam's denominator: v's correction stays frozen with v after the warm-up.
  std::vector<at::Tensor> v(n), denom(n), momentum(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    v[i] = State(i, "exp_avg_sq");
    if (warmup) v[i].mul_(std::get<1>(o.betas())).addcmul_(g[i], g[i], 1.0 - std::get<1>(o.betas()));
    const double bias2 = BiasCorrection(std::get<1>(o.betas()), std::min(t, freeze_step_), bias_correction_);
    denom[i] = (v[i].sqrt() / std::sqrt(bias2)).add_(o.eps());
  }
  if (!warmup) {
    // m_r = beta1 m + (1 - beta1) g_r on each rank, then the compressed mean.
    for (size_t i = 0; i < n; ++i) {
      const double beta1 = std::get<0>(static_cast<const OneBitAdamOptions&>(GroupOptions(i)).betas());
      momentum[i] = State(i, "exp_avg").mul(beta1).add_(g[i], 1.0 - beta1);
    }
    if (!CompressedMean(momentum, denom, v, NormalisedBounds())) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    const double beta1 = std::get<0>(o.betas());
    at::Tensor p = params()[i];
    at::Tensor& m = State(i, "exp_avg");
    if (o.weight_decay() != 0.0 && o.decoupled_weight_decay()) p.mul_(1.0 - o.lr() * o.weight_decay());
    if (warmup) {
      m.mul_(beta1).add_(g[i], 1.0 - beta1);
    } else {
      m.copy_(momentum[i]);
    }
    p.addcdiv_(m, denom[i], -o.lr() / BiasCorrection(beta1, t, bias_correction_));
  }
  return true;
}

}  // namespace lowbit::optim
