#include "lowbit/optimizers/onebit_adam.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/comm/distributed_data_parallel.h"

namespace lowbit::optim {

int64_t ResolveFreezeStep(const std::string& name, int64_t freeze_step, int64_t total_steps, int64_t lr_warmup_steps,
                          bool print_notice, const std::string& key) {
  LOWBIT_CHECK(freeze_step >= -1, name, ": ", key, " must be >= 0, or -1 for lr_warmup_steps + ", kFreezeAfterLrWarmup,
               " or ", kAutoFreezeFraction * 100, "% of total_steps, the earlier; got ", freeze_step);
  LOWBIT_CHECK(total_steps >= 0, name, ": total_steps must be >= 0 (0: unknown), got ", total_steps);
  LOWBIT_CHECK(lr_warmup_steps >= 0, name, ": lr_warmup_steps must be >= 0 (0: none or unknown), got ",
               lr_warmup_steps);
  if (freeze_step >= 0) return freeze_step;
  const int64_t of_run =
      total_steps > 0 ? std::max<int64_t>(1, std::llround(kAutoFreezeFraction * static_cast<double>(total_steps))) : 0;
  if (lr_warmup_steps > 0) {
    const int64_t after_warmup = lr_warmup_steps + kFreezeAfterLrWarmup;
    return of_run > 0 ? std::min(after_warmup, of_run) : after_warmup;
  }
  if (of_run > 0) return of_run;
  if (print_notice) {
    base::Warn(c10::str(name, ": none of ", key, ", lr_warmup_steps and total_steps is set; warming up for ",
                        kFallbackFreezeStep, " steps. Give lr_warmup_steps (the warm-up then ends ",
                        kFreezeAfterLrWarmup, " steps after the learning rate's), total_steps (",
                        kAutoFreezeFraction * 100, "% of the run) or ", key, "."));
  }
  return kFallbackFreezeStep;
}

void CheckSavedFreezeStep(const std::string& name, const std::string& key, const std::string& entry,
                          const std::map<std::string, at::Tensor>& saved, int64_t freeze_step) {
  const auto it = saved.find(entry);
  if (it == saved.end()) return;
  LOWBIT_CHECK(it->second.numel() == 1, name, ": the archive's ", entry, " entry has ", it->second.numel(),
               " elements, not 1");
  const int64_t was = it->second.to(at::kLong).item<int64_t>();
  LOWBIT_CHECK(was == freeze_step, name, ": the checkpoint's warm-up ends at step ", was, " (", key,
               "), this optimizer's at step ", freeze_step, "; resume with ", key, " ", was,
               " (the automatic one follows total_steps and lr_warmup_steps, so a resume with another run length "
               "or learning-rate warm-up moves it)");
}

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
      freeze_step_(ResolveFreezeStep("OneBitAdam", defaults.freeze_step(), defaults.total_steps(),
                                     defaults.lr_warmup_steps(), rank() == 0)),
      var_refresh_(defaults.var_refresh()),
      bias_correction_(defaults.bias_correction()),
      local_momentum_(defaults.local_momentum()) {
  LOWBIT_CHECK(var_refresh_ >= 0, "OneBitAdam: var_refresh must be >= 0 (0: never), got ", var_refresh_);
  std::string groups_config;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const OneBitAdamOptions&>(param_groups_[g].options());
    absl::StrAppend(&groups_config, CheckGroup("OneBitAdam", g, o.lr(), o.betas(), o.eps(), o.weight_decay()), "/",
                    o.decoupled_weight_decay());
  }
  Initialize("OneBitAdam",
             absl::StrCat("freeze_step=", freeze_step_,
                          var_refresh_ > 0 ? absl::StrCat(",var_refresh=", var_refresh_) : std::string(),
                          ",bias_correction=", bias_correction_, ",local_momentum=", local_momentum_,
                          ",block=", defaults.block(), groups_config),
             defaults.block(), defaults.averaging_hook(), defaults.codec());
}

bool OneBitAdam::Step(int64_t t, const std::vector<at::Tensor>& grads) {
  const size_t n = params().size();
  const bool warmup = t <= freeze_step_;
  const bool refresh = Refreshes(t);  // averaged gradients, as in the warm-up
  std::vector<at::Tensor> g(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    g[i] = o.weight_decay() != 0.0 && !o.decoupled_weight_decay() ? grads[i].add(params()[i], o.weight_decay())
                                                                    : grads[i];
  }
  // Adam's denominator: v's correction stays frozen with v after the warm-up.
  std::vector<at::Tensor> v(n), denom(n), momentum(n), local(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    v[i] = State(i, "exp_avg_sq");
    const double beta2 = std::get<1>(o.betas());
    if (warmup) v[i].mul_(beta2).addcmul_(g[i], g[i], 1.0 - beta2);
    if (refresh) {
      const double decay = std::pow(beta2, static_cast<double>(var_refresh_));
      v[i].mul_(decay).addcmul_(g[i], g[i], 1.0 - decay);
    }
    const double bias2 = BiasCorrection(beta2, VarianceSteps(t), bias_correction_);
    denom[i] = (v[i].sqrt() / std::sqrt(bias2)).add_(o.eps());
  }
  // A refresh step's gradients are the mean already: with a shared momentum
  // it is the warm-up's step; each rank's own momenta still need the exchange.
  const bool dense = warmup || (refresh && !local_momentum_);
  if (!dense) {
    // m_r = beta1 m + (1 - beta1) g_r on each rank, then the compressed mean;
    // m is the mean after the step, or m_r with local_momentum.
    for (size_t i = 0; i < n; ++i) {
      const double beta1 = std::get<0>(static_cast<const OneBitAdamOptions&>(GroupOptions(i)).betas());
      momentum[i] = State(i, "exp_avg").mul(beta1).add_(g[i], 1.0 - beta1);
      if (local_momentum_) local[i] = momentum[i].clone();  // kept; momentum[i] becomes the mean
    }
    if (!CompressedMean(momentum, denom, v, NormalisedBounds())) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const OneBitAdamOptions&>(GroupOptions(i));
    const double beta1 = std::get<0>(o.betas());
    at::Tensor p = params()[i];
    at::Tensor& m = State(i, "exp_avg");
    if (o.weight_decay() != 0.0 && o.decoupled_weight_decay()) p.mul_(1.0 - o.lr() * o.weight_decay());
    if (dense) {
      m.mul_(beta1).add_(g[i], 1.0 - beta1);
    } else {
      m.copy_(local_momentum_ ? local[i] : momentum[i]);
    }
    p.addcdiv_(dense ? m : momentum[i], denom[i], -o.lr() / BiasCorrection(beta1, t, bias_correction_));
  }
  return true;
}

void OneBitAdam::SaveExtra(comm::HookState* out) const {
  out->emplace_back("onebit_adam/freeze_step", at::tensor(freeze_step_));
}

void OneBitAdam::LoadExtra(const std::map<std::string, at::Tensor>& saved) {
  CheckSavedFreezeStep("OneBitAdam", "freeze_step", "onebit_adam/freeze_step", saved, freeze_step_);
}

}  // namespace lowbit::optim
