#include "lowbit/optimizers/zero_one_adam.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/optimizers/onebit_adam.h"

namespace lowbit::optim {

void ZeroOneAdamSchedule::Advance(int64_t t) {
  if (!LocalPhase(t)) {
    if (t % var_interval == 0 && ++var_counter == var_update_scaler) {
      var_counter = 0;
      var_interval *= 2;
    }
  } else if (++local_counter == local_step_scaler) {
    local_counter = 0;
    local_interval = std::min(local_step_clipper, local_interval * 2);
  }
}

ZeroOneAdam::ZeroOneAdam(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
                         ZeroOneAdamOptions defaults)
    : ZeroOneAdam(std::move(groups), ddp.shared_process_group(), &ddp, defaults) {}

ZeroOneAdam::ZeroOneAdam(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp,
                         ZeroOneAdamOptions defaults)
    : ZeroOneAdam({torch::optim::OptimizerParamGroup(std::move(params))}, ddp.shared_process_group(), &ddp,
                  defaults) {}

ZeroOneAdam::ZeroOneAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                         ZeroOneAdamOptions defaults)
    : ZeroOneAdam(std::move(groups), std::move(pg), nullptr, defaults) {}

ZeroOneAdam::ZeroOneAdam(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg,
                         ZeroOneAdamOptions defaults)
    : ZeroOneAdam({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(pg), nullptr, defaults) {}

ZeroOneAdam::ZeroOneAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
                         comm::DistributedDataParallel* ddp, const ZeroOneAdamOptions& defaults)
    : OneBitOptimizer(std::move(groups), std::make_unique<ZeroOneAdamOptions>(defaults), std::move(pg), ddp),
      bias_correction_(defaults.bias_correction()) {
  LOWBIT_CHECK(defaults.var_update_scaler() >= 1 || defaults.var_update_scaler() == -1,
               "ZeroOneAdam: var_update_scaler must be >= 1, or -1 for var_freeze_step / ", kAutoVarUpdateDivisor,
               "; got ", defaults.var_update_scaler());
  LOWBIT_CHECK(defaults.local_step_scaler() >= 1 || defaults.local_step_scaler() == -1,
               "ZeroOneAdam: local_step_scaler must be >= 1, or -1 for total_steps / ", kAutoLocalStepDivisor, "; got ",
               defaults.local_step_scaler());
  LOWBIT_CHECK(defaults.local_step_clipper() >= 1, "ZeroOneAdam: local_step_clipper must be >= 1, got ",
               defaults.local_step_clipper());
  schedule_.var_freeze_step = ResolveFreezeStep("ZeroOneAdam", defaults.var_freeze_step(), defaults.total_steps(),
                                                defaults.lr_warmup_steps(), rank() == 0, "var_freeze_step");
  schedule_.local_step_scaler = defaults.local_step_scaler();
  if (schedule_.local_step_scaler == -1) {
    schedule_.local_step_scaler =
        defaults.total_steps() > 0
            ? std::max<int64_t>(1, std::llround(static_cast<double>(defaults.total_steps()) / kAutoLocalStepDivisor))
            : kFallbackLocalStepScaler;
  }
  schedule_.var_update_scaler = defaults.var_update_scaler();
  if (schedule_.var_update_scaler == -1) {
    schedule_.var_update_scaler = defaults.total_steps() > 0
                                      ? std::max<int64_t>(1, schedule_.var_freeze_step / kAutoVarUpdateDivisor)
                                      : kFallbackVarUpdateScaler;
  }
  schedule_.local_step_clipper = defaults.local_step_clipper();
  std::string groups_config;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const ZeroOneAdamOptions&>(param_groups_[g].options());
    absl::StrAppend(&groups_config, CheckGroup("ZeroOneAdam", g, o.lr(), o.betas(), o.eps(), o.weight_decay()), "/",
                    o.decoupled_weight_decay());
  }
  Initialize("ZeroOneAdam",
             absl::StrCat("var_freeze_step=", schedule_.var_freeze_step, ",var_update_scaler=",
                          schedule_.var_update_scaler, ",local_step_scaler=", schedule_.local_step_scaler,
                          ",local_step_clipper=", schedule_.local_step_clipper, ",bias_correction=", bias_correction_,
                          ",block=", defaults.block(), groups_config),
             defaults.block(), defaults.averaging_hook(), defaults.codec());
}

bool ZeroOneAdam::Step(int64_t t, const std::vector<at::Tensor>& grads) {
  if (schedule_.LocalPhase(t)) {
    if (!LocalStep(t, grads)) return false;
    schedule_.Advance(t);
    return true;
  }
  const size_t n = params().size();
  const bool refresh = schedule_.UpdatesVariance(t);
  if (refresh) ++variance_updates_;
  std::vector<at::Tensor> g(n), v(n), denom(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const ZeroOneAdamOptions&>(GroupOptions(i));
    const double beta2 = std::get<1>(o.betas());
    g[i] = o.weight_decay() != 0.0 && !o.decoupled_weight_decay() ? grads[i].add(params()[i], o.weight_decay())
                                                                    : grads[i].clone();
    v[i] = State(i, "exp_avg_sq");
    if (refresh) v[i].mul_(beta2).addcmul_(g[i], g[i], 1.0 - beta2);
    denom[i] = (v[i].sqrt() / std::sqrt(BiasCorrection(beta2, variance_updates_, bias_correction_))).add_(o.eps());
  }
  // Not a refresh: the local gradients' 1-bit compressed mean.
  if (!refresh && !CompressedMean(g, denom, v, NormalisedBounds())) return false;
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const ZeroOneAdamOptions&>(GroupOptions(i));
    const double beta1 = std::get<0>(o.betas());
    at::Tensor p = params()[i];
    at::Tensor& m = State(i, "exp_avg");
    m.mul_(beta1).add_(g[i], 1.0 - beta1);
    at::Tensor update = m / denom[i];
    if (o.decoupled_weight_decay()) update.add_(p, o.weight_decay());
    p.add_(update, -o.lr() / BiasCorrection(beta1, t, bias_correction_));
  }
  schedule_.Advance(t);
  return true;
}

// Everything is computed aside first, so a synchronisation that sees a
// non-finite input changes nothing. "sync_params" holds the parameters as of
// the last synchronisation (the same on every rank); a rank's accumulated
// change u is its parameters minus them, so the average lands on bit-equal
// parameters everywhere (DeepSpeed's p - u + mean leaves rounding
// differences between ranks).
bool ZeroOneAdam::LocalStep(int64_t t, const std::vector<at::Tensor>& grads) {
  if (t == schedule_.var_freeze_step + 1) ResetCompressedMean();  // the errors were the gradients'
  const size_t n = params().size();
  std::vector<at::Tensor> m(n), p(n), denom(n), v(n);
  std::vector<double> lrs(n);
  std::vector<double> bounds = NormalisedBounds();
  for (size_t i = 0; i < n; ++i) {
    const auto& o = static_cast<const ZeroOneAdamOptions&>(GroupOptions(i));
    const auto [beta1, beta2] = o.betas();
    const at::Tensor& param = params()[i];
    if (!HasState(i, "sync_params")) State(i, "sync_params").copy_(param);
    const at::Tensor g = o.weight_decay() != 0.0 && !o.decoupled_weight_decay()
                             ? grads[i].add(param, o.weight_decay())
                             : grads[i];
    v[i] = State(i, "exp_avg_sq");
    denom[i] = (v[i].sqrt() / std::sqrt(BiasCorrection(beta2, variance_updates_, bias_correction_))).add_(o.eps());
    // The local gradient, clamped in units of the frozen denominator.
    const at::Tensor clamped = (g / denom[i]).clamp_(-bounds[i], bounds[i]).mul_(denom[i]);
    m[i] = State(i, "exp_avg").mul(beta1).add_(clamped, 1.0 - beta1);
    at::Tensor update = m[i] / denom[i];
    if (o.decoupled_weight_decay()) update.add_(param, o.weight_decay());
    const double lr_t = o.lr() / BiasCorrection(beta1, t, bias_correction_);
    p[i] = param.add(update, -lr_t);
    lrs[i] = Scalar(i, "lrs", 0.0) + lr_t;
  }
  if (!schedule_.Synchronises(t)) {
    for (size_t i = 0; i < n; ++i) {
      params()[i].copy_(p[i]);
      State(i, "exp_avg").copy_(m[i]);
      Scalar(i, "lrs", 0.0) = lrs[i];
    }
    return true;
  }
  // Average the accumulated changes in momentum units, and apply the average
  // to the parameters of the last synchronisation.
  std::vector<at::Tensor> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = (p[i] - State(i, "sync_params")).mul_(denom[i]);
  for (size_t i = 0; i < n; ++i) bounds[i] *= lrs[i];  // u is in units of lr * update
  if (!CompressedMean(w, denom, v, bounds)) return false;
  for (size_t i = 0; i < n; ++i) {
    at::Tensor& synced = State(i, "sync_params");
    synced.add_(w[i] / denom[i]);
    params()[i].copy_(synced);
    State(i, "exp_avg").copy_(w[i]).div_(-lrs[i]);
    Scalar(i, "lrs", 0.0) = 0.0;
  }
  return true;
}

// Between synchronisations each rank's parameters are its own: they are
// saved with its state, and load() puts them back.
void ZeroOneAdam::SaveExtra(comm::HookState* out) const {
  for (size_t i = 0; i < params().size(); ++i) {
    if (HasState(i, "sync_params")) out->emplace_back(absl::StrCat("p", i, "/local_params"), params()[i].detach());
  }
  out->emplace_back("zero_one/schedule",
                    at::tensor(std::vector<int64_t>{schedule_.var_interval, schedule_.var_counter,
                                                    schedule_.local_interval, schedule_.local_counter,
                                                    variance_updates_}));
  out->emplace_back("zero_one/var_freeze_step", at::tensor(schedule_.var_freeze_step));
}

void ZeroOneAdam::LoadExtra(const std::map<std::string, at::Tensor>& saved) {
  auto it = saved.find("zero_one/schedule");
  LOWBIT_CHECK(it != saved.end() && it->second.numel() == 5, "ZeroOneAdam: the archive has no zero_one/schedule entry");
  CheckSavedFreezeStep("ZeroOneAdam", "var_freeze_step", "zero_one/var_freeze_step", saved, schedule_.var_freeze_step);
  const at::Tensor s = it->second.to(at::kLong);
  schedule_.var_interval = s[0].item<int64_t>();
  schedule_.var_counter = s[1].item<int64_t>();
  schedule_.local_interval = s[2].item<int64_t>();
  schedule_.local_counter = s[3].item<int64_t>();
  variance_updates_ = s[4].item<int64_t>();
  for (size_t i = 0; i < params().size(); ++i) {
    if (!HasState(i, "local_params")) continue;
    at::NoGradGuard no_grad;
    params()[i].copy_(State(i, "local_params"));
    DropState(i, "local_params");
  }
}

}  // namespace lowbit::optim
