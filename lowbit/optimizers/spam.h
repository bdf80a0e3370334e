// SPAM and Stable-SPAM: Adam with defences against gradient spikes, with
// fp32 or lowbit's 8-bit blockwise state.
//
// SPAM (Huang et al. 2025, "SPAM: Spike-Aware Adam with Momentum Reset for
// Stable LLM Training", Alg. 1 and the authors' optimizer), at global step t
// (1-based):
//   - momentum reset: when t % reset_interval == 0, m and v restart at 0 (the
//     bias corrections keep counting t);
//   - spike-aware clipping: an element with g^2 > theta * v (v from the
//     previous step) becomes sign(g) * sqrt(theta * v); off for the first
//     clip_delay steps of the run and after each reset, while v is young,
//     and for elements whose v is 0;
//   - re-warm-up: after a reset the step is scaled by
//     1 - 0.99 (1 + cos(pi c / (W + 1))) / 2, c = t % reset_interval < W
//     (W = warmup_steps), and by 1 otherwise.
// Stable-SPAM (Huang et al. 2025, "Stable-SPAM: How to Train in 4-Bit More
// Stably than 16-Bit Adam", Alg. 1), per parameter tensor, k its statistics'
// step (never reset):
//   - AdaClip: M = g3 M + (1 - g3) max|g|; T = M / (1 - g3^k); elements with
//     |g| > T become g / max|g| * T;
//   - AdaGN: n = ||g||; a = g1 a + (1 - g1) n; b = g2 b + (1 - g2) n^2;
//     g <- g / n * (a / (1 - g1^k)) / (sqrt(b / (1 - g2^k)) + eps);
//   - momentum reset every reset_interval steps, after which Adam's bias
//     corrections restart (the authors' code; no re-warm-up).
// Then Adam with decoupled weight decay (torch::optim::AdamW's order):
//   p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= scale lr / (1 - b1^s) * m / (sqrt(v) / sqrt(1 - b2^s) + eps).
// With spike_threshold 0, reset_interval 0 and stable false this is AdamW.
// Non-finite gradient elements count as 0.
//
//   lowbit::optim::Spam spam(model->parameters(), lowbit::optim::SpamOptions(1e-3));
//   lowbit::optim::Spam stable(model->parameters(), lowbit::optim::SpamOptions::StableSpam(1e-3).state_bits(8));
//
// state_bits 8 keeps m and v of tensors with at least min_8bit_size elements
// as 8-bit blockwise codes (optimizers/blockwise_8bit.h; the same fused
// kernel); smaller ones stay fp32. save()/load() restore every state exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include "lowbit/optimizers/blockwise_8bit.h"

namespace lowbit::optim {

struct SpamOptions : public torch::optim::OptimizerCloneableOptions<SpamOptions> {
  SpamOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT: implicit, as torch::optim::AdamOptions
  // Stable-SPAM's defaults: AdaClip and AdaGN on, reset every 1000 steps, no
  // spike clipping and no re-warm-up.
  static SpamOptions StableSpam(double lr = 1e-3);

  // Per parameter group.
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, weight_decay) = 0.0;  // decoupled
  // Per optimizer (taken from the defaults).
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(int64_t, reset_interval) = 500;   // Delta T; 0: never
  TORCH_ARG(int64_t, warmup_steps) = 150;     // W; 0: no re-warm-up
  TORCH_ARG(double, spike_threshold) = 5000;  // theta; 0: no spike clipping
  TORCH_ARG(int64_t, clip_delay) = 20;        // N
  TORCH_ARG(bool, stable) = false;            // AdaClip + AdaGN
  TORCH_ARG(double, gamma1) = 0.7;            // AdaGN's first moment of ||g||
  TORCH_ARG(double, gamma2) = 0.9;            // AdaGN's second moment
  TORCH_ARG(double, gamma3) = 0.999;          // AdaClip's moving max
  TORCH_ARG(int64_t, state_bits) = 32;        // 32 or 8
  TORCH_ARG(int64_t, block_size) = 256;       // 8-bit: values per absmax
  TORCH_ARG(int64_t, min_8bit_size) = 4096;   // 8-bit: smaller tensors keep fp32 state

 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct SpamStepStats {
  int64_t spike_clipped = 0;  // elements SPAM's clipping changed
  int64_t ada_clipped = 0;    // elements AdaClip changed
  bool reset = false;         // this step reset m and v
  double scale = 1.0;         // the re-warm-up factor
};

class Spam final : public torch::optim::Optimizer {
 public:
  explicit Spam(std::vector<torch::optim::OptimizerParamGroup> groups, SpamOptions defaults = {});
  explicit Spam(std::vector<at::Tensor> params, SpamOptions defaults = {});
  ~Spam() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  const SpamStepStats& LastStepStats() const { return last_; }
  int64_t steps() const { return step_; }
  // The re-warm-up factor of global step t (1-based) under `o`.
  static double WarmupScale(const SpamOptions& o, int64_t t);
  // Bytes of optimizer state held (m, v, and the 8-bit absmax).
  int64_t StateBytes() const;
  // `param`'s m or v ("m", "v") as fp32, for inspection; undefined before its first step.
  at::Tensor State(const at::Tensor& param, const std::string& name) const;

 private:
  struct ParamState;
  ParamState& StateOf(const at::Tensor& param);
  std::unique_ptr<ParamState> NewState(const at::Tensor& param) const;
  std::unordered_map<const c10::TensorImpl*, std::unique_ptr<ParamState>> state_;
  int64_t step_ = 0;
  SpamStepStats last_;
};

}  // namespace lowbit::optim
