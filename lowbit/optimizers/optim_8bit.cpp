#include "lowbit/optimizers/optim_8bit.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "lowbit/base/error.h"

namespace lowbit::optim {
namespace {

std::string What(const std::string& name, size_t group) { return name + " group " + std::to_string(group); }

// Fills the rule-independent fields: betas and their complements.
kernels::OptimStepArgs Args(kernels::OptimRule rule, double lr, double beta1, double one_minus_beta1, double beta2,
                            double one_minus_beta2) {
  kernels::OptimStepArgs a;
  a.rule = rule;
  a.lr = static_cast<float>(lr);
  a.beta1 = static_cast<float>(beta1);
  a.one_minus_beta1 = static_cast<float>(one_minus_beta1);
  a.beta2 = static_cast<float>(beta2);
  a.one_minus_beta2 = static_cast<float>(one_minus_beta2);
  return a;
}

void CheckAdamLike(const std::string& what, double lr, const Betas& betas, double eps, double weight_decay,
                   const Blockwise8bitSettings& settings) {
  internal::CheckLr(what, lr);
  internal::CheckBeta(what, "beta1", std::get<0>(betas));
  internal::CheckBeta(what, "beta2", std::get<1>(betas));
  internal::CheckPositive(what, "eps", eps);
  internal::CheckNonNegative(what, "weight_decay", weight_decay);
  internal::CheckSettings(what, settings);
}

// Adam's step t: bias corrections folded into lr and the denominator.
StepPlan AdamPlan(double lr, const Betas& betas, double eps, int64_t t) {
  const auto [b1, b2] = betas;
  StepPlan plan;
  plan.has_m = plan.has_v = true;
  plan.args = Args(kernels::OptimRule::kAdam, lr / (1 - std::pow(b1, static_cast<double>(t))), b1, 1 - b1, b2, 1 - b2);
  plan.args.eps = static_cast<float>(eps);
  plan.args.inv_sqrt_bc2 = static_cast<float>(1 / std::sqrt(1 - std::pow(b2, static_cast<double>(t))));
  return plan;
}

}  // namespace

void Adam8bitOptions::Check(size_t group) const {
  CheckAdamLike(What(Name(), group), lr(), betas(), eps(), weight_decay(), settings());
}

StepPlan Adam8bitOptions::Plan(int64_t t) const {
  StepPlan plan = AdamPlan(lr(), betas(), eps(), t);
  plan.args.l2 = static_cast<float>(weight_decay());
  return plan;
}

void AdamW8bitOptions::Check(size_t group) const {
  CheckAdamLike(What(Name(), group), lr(), betas(), eps(), weight_decay(), settings());
}

StepPlan AdamW8bitOptions::Plan(int64_t t) const {
  StepPlan plan = AdamPlan(lr(), betas(), eps(), t);
  plan.args.decay = static_cast<float>(1 - lr() * weight_decay());
  return plan;
}

void SGD8bitOptions::Check(size_t group) const {
  const std::string what = What(Name(), group);
  internal::CheckLr(what, lr());
  internal::CheckNonNegative(what, "momentum", momentum());
  internal::CheckNonNegative(what, "dampening", dampening());
  internal::CheckNonNegative(what, "weight_decay", weight_decay());
  LOWBIT_CHECK(!nesterov() || (momentum() > 0 && dampening() == 0), what,
               ": nesterov momentum needs momentum > 0 and dampening 0, got momentum ", momentum(), " and dampening ",
               dampening());
  internal::CheckSettings(what, settings());
}

StepPlan SGD8bitOptions::Plan(int64_t t) const {
  StepPlan plan;
  plan.has_m = momentum() != 0;
  plan.args = Args(kernels::OptimRule::kSgd, lr(), momentum(), 1 - dampening(), 0, 1);
  plan.args.l2 = static_cast<float>(weight_decay());
  plan.args.nesterov = nesterov() ? 1 : 0;
  plan.args.first_step = t == 1 ? 1 : 0;
  return plan;
}

void Lion8bitOptions::Check(size_t group) const {
  const std::string what = What(Name(), group);
  internal::CheckLr(what, lr());
  internal::CheckBeta(what, "beta1", std::get<0>(betas()));
  internal::CheckBeta(what, "beta2", std::get<1>(betas()));
  internal::CheckNonNegative(what, "weight_decay", weight_decay());
  internal::CheckSettings(what, settings());
}

StepPlan Lion8bitOptions::Plan(int64_t) const {
  const auto [b1, b2] = betas();
  StepPlan plan;
  plan.has_m = true;
  plan.args = Args(kernels::OptimRule::kLion, lr(), b1, 1 - b1, b2, 1 - b2);
  plan.args.decay = static_cast<float>(1 - lr() * weight_decay());
  return plan;
}

void RMSprop8bitOptions::Check(size_t group) const {
  const std::string what = What(Name(), group);
  internal::CheckLr(what, lr());
  internal::CheckBeta(what, "alpha", alpha());
  internal::CheckPositive(what, "eps", eps());
  internal::CheckNonNegative(what, "weight_decay", weight_decay());
  internal::CheckNonNegative(what, "momentum", momentum());
  internal::CheckSettings(what, settings());
}

StepPlan RMSprop8bitOptions::Plan(int64_t) const {
  StepPlan plan;
  plan.has_v = true;
  plan.has_m = momentum() > 0;
  plan.args = Args(kernels::OptimRule::kRmsprop, lr(), momentum(), 1, alpha(), 1 - alpha());
  plan.args.eps = static_cast<float>(eps());
  plan.args.l2 = static_cast<float>(weight_decay());
  return plan;
}

void Adagrad8bitOptions::Check(size_t group) const {
  const std::string what = What(Name(), group);
  internal::CheckLr(what, lr());
  internal::CheckNonNegative(what, "lr_decay", lr_decay());
  internal::CheckNonNegative(what, "weight_decay", weight_decay());
  internal::CheckNonNegative(what, "initial_accumulator_value", initial_accumulator_value());
  internal::CheckPositive(what, "eps", eps());
  internal::CheckSettings(what, settings());
}

StepPlan Adagrad8bitOptions::Plan(int64_t t) const {
  StepPlan plan;
  plan.has_v = true;
  plan.v_initial = initial_accumulator_value();
  plan.args = Args(kernels::OptimRule::kAdagrad, lr() / (1 + static_cast<double>(t - 1) * lr_decay()), 0, 1, 0, 1);
  plan.args.eps = static_cast<float>(eps());
  plan.args.l2 = static_cast<float>(weight_decay());
  return plan;
}

template class Optimizer8bit<Adam8bitOptions>;
template class Optimizer8bit<AdamW8bitOptions>;
template class Optimizer8bit<SGD8bitOptions>;
template class Optimizer8bit<Lion8bitOptions>;
template class Optimizer8bit<RMSprop8bitOptions>;
template class Optimizer8bit<Adagrad8bitOptions>;

}  // namespace lowbit::optim
