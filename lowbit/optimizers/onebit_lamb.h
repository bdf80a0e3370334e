// OneBitLamb: 1-bit LAMB (Li et al. 2022, "1-bit LAMB: Communication
// Efficient Large-Scale Large-Batch Training with LAMB's Convergence Speed",
// Algorithm 1; DeepSpeed's OnebitLamb).
//
// Warm-up (steps 1..freeze_step), LAMB on averaged gradients: per layer
//   update = m / (sqrt(v) + eps) [+ weight_decay * p],
//   coeff = clamp(||p|| / ||update||, min_coeff, max_coeff) (1 if a norm is 0),
//   p -= lr * coeff * update,
// and each layer's frozen coefficient tracks coeff_freeze = coeff_beta *
// coeff_freeze + (1 - coeff_beta) * coeff (from 0, on steps where coeff != 1).
// Compression: the momentum is averaged with the 1-bit compressed allreduce
// (as OneBitAdam); v is frozen, but a fresh variance v' keeps tracking the
// gradients reconstructed from the averaged momentum, g = (m - beta1 m_prev) /
// (1 - beta1). Per layer, the step is lr * coeff_freeze * factor * update with
//   factor = max((sqrt(v) + eps) / (sqrt(v') + eps)), blended towards 1 by
//            ||m / (sqrt(v) + eps)|| / ||update|| when weight_decay > 0,
//   clamped to [factor_min, factor_max] and to last_factor * (1 -+ factor_threshold).
//
// With bias_correction (the default) m is divided by 1 - beta1^t and v by
// 1 - beta2^t (the frozen v by its value at freeze_step); DeepSpeed applies
// none (bias_correction(false)).
//
//   lowbit::optim::OneBitLamb opt(model->parameters(), ddp,
//                                 lowbit::optim::OneBitLambOptions().freeze_step(100));  // lr 1e-2
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "lowbit/optimizers/onebit_optimizer.h"

namespace lowbit::optim {

struct OneBitLambOptions : public torch::optim::OptimizerCloneableOptions<OneBitLambOptions> {
  OneBitLambOptions(double lr = 1e-2) : lr_(lr) {}  // NOLINT: implicit, as torch::optim::AdamOptions
  // Per parameter group.
  // LAMB's own learning rate: at 1e-3 its trust-ratio warm-up is too slow
  // for short runs (0.784 after 2 epochs on Fashion-MNIST where 1e-2 gives
  // 0.8975 after 3; docs/optimizers.md).
  TORCH_ARG(double, lr) = 1e-2;
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
  // Per optimizer.
  TORCH_ARG(int64_t, freeze_step) = 100;
  TORCH_ARG(bool, bias_correction) = true;
  TORCH_ARG(int64_t, block) = 0;
  // As OneBitAdamOptions::averaging_hook.
  TORCH_ARG(std::shared_ptr<comm::CommHook>, averaging_hook) = nullptr;
  // The compressed exchange: empty, the built-in 1-bit two-phase allreduce;
  // else a compress::MakeCommHook spec ("topk:density=0.01", "ternary",
  // "powersgd:rank=8", "qsgd:bits=2") whose hook exchanges the normalised
  // momentum with its own error feedback (docs/optimizers.md measures each).
  TORCH_ARG(std::string, codec) = "";
  TORCH_ARG(double, max_coeff) = 10.0;
  TORCH_ARG(double, min_coeff) = 0.01;
  TORCH_ARG(double, coeff_beta) = 0.9;
  TORCH_ARG(double, factor_max) = 4.0;
  TORCH_ARG(double, factor_min) = 0.5;
  TORCH_ARG(double, factor_threshold) = 0.1;

  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

class OneBitLamb final : public OneBitOptimizer {
 public:
  OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
             OneBitLambOptions defaults = {});
  OneBitLamb(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, OneBitLambOptions defaults = {});
  OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
             OneBitLambOptions defaults = {});
  OneBitLamb(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, OneBitLambOptions defaults = {});

  bool AveragesGradientsAt(int64_t t) const override { return t <= options_.freeze_step(); }
  // The coefficient each parameter's last step used (lr multiplier): the
  // clamped trust ratio in warm-up, coeff_freeze * factor after.
  const std::vector<double>& LastCoefficients() const { return last_coeff_; }
  // Each parameter's coeff_freeze (the warm-up's average trust ratio).
  std::vector<double> FrozenCoefficients() const;

 private:
  OneBitLamb(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
             comm::DistributedDataParallel* ddp, const OneBitLambOptions& defaults);
  bool Step(int64_t t, const std::vector<at::Tensor>& grads) override;

  OneBitLambOptions options_;
  std::vector<double> last_coeff_;
};

}  // namespace lowbit::optim
