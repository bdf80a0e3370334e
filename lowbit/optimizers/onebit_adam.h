// OneBitAdam: 1-bit Adam (Tang et al. 2021, "1-bit Adam: Communication
// Efficient Large-Scale Training with Adam's Convergence Speed", Algorithm 1).
//
// Steps 1..freeze_step are Adam on averaged gradients (torch::optim::Adam's
// arithmetic, or AdamW's with decoupled_weight_decay). From then on the
// variance v is frozen; each rank updates the momentum from its local
// gradient, m_r = beta1 m + (1 - beta1) g_r, and the ranks average the m_r
// with the 1-bit two-phase compressed allreduce with worker and server error
// feedback; every rank then holds the same m and steps
//   p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^freeze_step)) + eps).
//
// Bias correction (bias_correction, default on): Adam's, with the variance's
// correction frozen with the variance, so the update is continuous at the
// freeze. DeepSpeed's OnebitAdam applies none (bias_correction(false)).
// Weight decay: L2 (added to the gradient, as torch::optim::Adam) or, with
// decoupled_weight_decay, p *= 1 - lr * weight_decay (as AdamW).
//
//   lowbit::optim::OneBitAdam opt(model->parameters(), ddp,
//                                 lowbit::optim::OneBitAdamOptions(1e-3).freeze_step(100));
//
// See optimizers/onebit_optimizer.h for communication, NoSync and state.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "lowbit/optimizers/onebit_optimizer.h"

namespace lowbit::optim {

inline constexpr double kAutoFreezeFraction = 0.1;
inline constexpr int64_t kFallbackFreezeStep = 200;
// The automatic freeze with lr_warmup_steps: this many steps after the
// learning-rate warm-up ends (0/1 Adam's rule, freezing at the warm-up's end,
// with a margin: docs/gpt.md measures it at 2000 steps).
inline constexpr int64_t kFreezeAfterLrWarmup = 10;

// freeze_step as OneBitAdamOptions documents it (-1: automatic); `name` (the
// optimizer) and `key` (the option) for the notice and the errors.
int64_t ResolveFreezeStep(const std::string& name, int64_t freeze_step, int64_t total_steps, int64_t lr_warmup_steps,
                          bool print_notice, const std::string& key = "freeze_step");
// A checkpoint's resolved warm-up (`entry` in the archive's extra state) must
// be this optimizer's: an automatic one follows total_steps and
// lr_warmup_steps, so a resume with another run length would otherwise move
// the freeze silently. Archives without the entry (older ones) pass.
void CheckSavedFreezeStep(const std::string& name, const std::string& key, const std::string& entry,
                          const std::map<std::string, at::Tensor>& saved, int64_t freeze_step);

struct OneBitAdamOptions : public torch::optim::OptimizerCloneableOptions<OneBitAdamOptions> {
  OneBitAdamOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT: implicit, as torch::optim::AdamOptions
  // Per parameter group.
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(bool, decoupled_weight_decay) = false;
  // Per optimizer (taken from the defaults, not from groups).
  // The warm-up, in steps. -1 (the default): the earlier of lr_warmup_steps
  // + kFreezeAfterLrWarmup (10) and kAutoFreezeFraction (10%) of
  // total_steps, whichever is given (docs/gpt.md: after the GPT's 50-step
  // learning-rate warm-up, step 60 holds at 600 and at 2000 steps, where 10%
  // (200) lost 2%; at 600 steps 17% lost 1.2%, 33% 3.2%); with neither,
  // kFallbackFreezeStep (200, measured best on a 702-step Fashion-MNIST run)
  // and a printed notice. DeepSpeed uses 100000 for BERT.
  TORCH_ARG(int64_t, freeze_step) = -1;
  // The run's length in optimizer steps, as a learning-rate schedule takes
  // it; 0: unknown. Only the automatic freeze_step reads it.
  TORCH_ARG(int64_t, total_steps) = 0;
  // The learning-rate schedule's warm-up, in optimizer steps; 0: none or
  // unknown. Only the automatic freeze_step reads it.
  TORCH_ARG(int64_t, lr_warmup_steps) = 0;
  TORCH_ARG(bool, bias_correction) = true;
  // Elements per 1-bit scale; 0: one per chunk of the exchange (DeepSpeed's).
  TORCH_ARG(int64_t, block) = 0;
  // The exchange of the steps that need averaged gradients (with DDP): null
  // is a fp32 mean allreduce; e.g. compress::MakeCommHook(pg, "fp16") halves
  // those steps' bytes (DeepSpeed's warm-up averages fp16 gradients). Its
  // Config() joins the settings compared across ranks; its state is saved
  // with the optimizer.
  TORCH_ARG(std::shared_ptr<comm::CommHook>, averaging_hook) = nullptr;
  // The compressed exchange: empty, the built-in 1-bit two-phase allreduce;
  // else a compress::MakeCommHook spec ("topk:density=0.01", "ternary",
  // "powersgd:rank=8", "qsgd:bits=2") whose hook exchanges the normalised
  // momentum with its own error feedback (docs/optimizers.md measures each).
  TORCH_ARG(std::string, codec) = "";
  // After the warm-up each rank keeps its own momentum m_r = beta1 m_r +
  // (1 - beta1) g_r, and the exchange's error feedback carries what the
  // codec left out; the step uses the compressed mean of the m_r. Off
  // (1-bit Adam's): m becomes the compressed mean, the same on every rank.
  // For codecs whose message is sparse or low-rank (top-k, PowerSGD), which
  // would otherwise zero most of the momentum each step.
  TORCH_ARG(bool, local_momentum) = false;
  // After the warm-up, every var_refresh-th step (t - freeze_step a multiple
  // of it) averages the gradients again (through averaging_hook) and
  // refreshes the frozen variance with them, v = beta2^R v + (1 - beta2^R) g^2
  // for R = var_refresh (one sample standing in for the R steps since the
  // last, so v follows the run as dense Adam's would), its correction
  // 1 - beta2^t; the momentum takes the averaged gradient too, and without
  // local_momentum the step sends nothing else. 0 (the default): frozen
  // for good, 1-bit Adam's rule.
  TORCH_ARG(int64_t, var_refresh) = 0;

  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

class OneBitAdam final : public OneBitOptimizer {
 public:
  OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
             OneBitAdamOptions defaults = {});
  OneBitAdam(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, OneBitAdamOptions defaults = {});
  // Local gradients, averaged by the optimizer during warm-up.
  OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
             OneBitAdamOptions defaults = {});
  OneBitAdam(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, OneBitAdamOptions defaults = {});

  bool AveragesGradientsAt(int64_t t) const override { return t <= freeze_step_ || Refreshes(t); }

 private:
  OneBitAdam(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
             comm::DistributedDataParallel* ddp, const OneBitAdamOptions& defaults);
  bool Step(int64_t t, const std::vector<at::Tensor>& grads) override;
  void SaveExtra(comm::HookState* out) const override;
  void LoadExtra(const std::map<std::string, at::Tensor>& saved) override;
  // Step t refreshes the variance (var_refresh).
  bool Refreshes(int64_t t) const {
    return var_refresh_ > 0 && t > freeze_step_ && (t - freeze_step_) % var_refresh_ == 0;
  }
  // The steps v has averaged, for its bias correction: t in the warm-up,
  // then the last refresh (or the freeze).
  int64_t VarianceSteps(int64_t t) const {
    if (t <= freeze_step_) return t;
    return var_refresh_ > 0 ? freeze_step_ + (t - freeze_step_) / var_refresh_ * var_refresh_ : freeze_step_;
  }

  int64_t freeze_step_;
  int64_t var_refresh_;
  bool bias_correction_;
  bool local_momentum_;
};

}  // namespace lowbit::optim
