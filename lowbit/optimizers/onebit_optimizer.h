// OneBitOptimizer: what 1-bit Adam, 0/1 Adam and 1-bit LAMB share. They
// average gradients in full precision while they must (warm-up, variance
// refreshes) and otherwise exchange a 1-bit compressed momentum themselves,
// with DeepSpeed's two-phase compressed allreduce and worker and server error
// feedback (see Note [Compressed exchange] in comm/compression_hook.cpp).
//
// Built on a DistributedDataParallel, the optimizer replaces DDP's comm hook
// with its own: a mean allreduce on the steps that need averaged gradients and
// nothing at all on the others, so backward sends no bytes in the compression
// phase and NoSync() accumulation works unchanged. Built on a ProcessGroup
// alone, it takes each rank's local gradients and averages them itself when it
// must.
//
//   lowbit::comm::DistributedDataParallel ddp(model, pg);
//   lowbit::optim::OneBitAdam opt(model->parameters(), ddp,
//                                 lowbit::optim::OneBitAdamOptions(1e-3).freeze_step(100));
//   for (...) { opt.zero_grad(); loss_fn(model->forward(x), y).backward(); opt.step(); }
//
// State (moments, step, each rank's worker and server errors) differs per rank
// in the compression phase: every rank saves its own with torch::save(opt, ...)
// and loads it back with torch::load.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::comm {
class DistributedDataParallel;
}  // namespace lowbit::comm
namespace lowbit::optim {

// (beta1, beta2), as torch::optim::AdamOptions::betas.
using Betas = std::tuple<double, double>;

// What the last step() did.
struct OneBitStepStats {
  // The step used full-precision averaged gradients.
  bool averaged_gradients = false;
  // The step ran a 1-bit compressed exchange.
  bool compressed = false;
  // Some rank's input to the compressed exchange was NaN/Inf: nothing changed
  // and the step does not count (as AMP's GradScaler skips a step).
  bool skipped = false;
  // Bytes this rank sent in step() (DDP's are counted by DDP).
  int64_t bytes_sent = 0;
};

class OneBitOptimizer : public torch::optim::Optimizer {
 public:
  ~OneBitOptimizer() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  // Steps taken (skipped ones not counted); step() runs step steps() + 1.
  int64_t steps() const { return step_; }
  const OneBitStepStats& LastStepStats() const { return last_; }
  // Whether step t (1-based) works on full-precision averaged gradients.
  virtual bool AveragesGradientsAt(int64_t t) const = 0;
  // The settings every rank must share, compared across ranks at construction.
  const std::string& Config() const { return config_; }

  // DeepSpeed's exp_avg_mask: after each compressed exchange, the averaged
  // momentum of `param` is multiplied by `mask` (its shape, 0 where the
  // gradient is always zero), since a 1-bit message cannot say "exactly 0"
  // and the error would otherwise grow there. A setting, not state: set it
  // again after constructing a fresh optimizer to load into.
  void SetMomentumMask(const at::Tensor& param, const at::Tensor& mask);
  // With a codec that adapts per layer (adaptive_powersgd, adaptive_topk,
  // adaptive_qsgd: L-GreCo), `on_adapt` is called with each new set of
  // decisions, as compress::MakeCommHook's callback. Before the first step().
  // The decisions name the parameters as the module does when the optimizer
  // is built on a DistributedDataParallel ("blocks.0.attn.weight"), else
  // "p<i>" in parameter order.
  void OnCodecAdapt(std::function<void(int64_t step, const std::string& summary)> on_adapt);

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 protected:
  // `defaults` must hold the optimizer's options type; `ddp` may be null.
  OneBitOptimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                  std::unique_ptr<torch::optim::OptimizerOptions> defaults, std::shared_ptr<comm::ProcessGroup> pg,
                  comm::DistributedDataParallel* ddp);
  // Called last by each derived constructor: checks the parameters, compares
  // `name(settings)` and the parameter shapes across ranks, and (with DDP)
  // registers the phase hook. `block` is the elements per 1-bit scale (0: one
  // per chunk of the two-phase exchange, as DeepSpeed).
  // `averaging_hook` (may be null) exchanges the averaging steps' buckets
  // under DDP; it needs DDP.
  // `codec` (may be empty) is a compress::MakeCommHook spec ("topk:density=0.01",
  // "powersgd:rank=8", "ternary", ...) that carries the compressed exchange
  // instead of the built-in 1-bit two-phase allreduce; see CompressedMean.
  void Initialize(const std::string& name, const std::string& settings, int64_t block,
                  std::shared_ptr<comm::CommHook> averaging_hook = nullptr, const std::string& codec = "");

  // LOWBIT_CHECKs shared by the three (`name`: the optimizer's) for parameter group `group`: lr > 0,
  // betas in [0, 1), eps > 0, weight_decay >= 0. Records the group's bound
  // for NormalisedBounds and returns ",group<g>=beta1/beta2/eps/weight_decay"
  // for the settings compared across ranks. Call once per group, before
  // Initialize.
  std::string CheckGroup(const std::string& name, size_t group, double lr, const std::tuple<double, double>& betas, double eps,
                         double weight_decay);
  // Adam's bias correction 1 - beta^t (1 when off or t == 0).
  static double BiasCorrection(double beta, int64_t t, bool on);

  // Runs step `t` on `grads` (one per parameter, in parameter order; averaged
  // when AveragesGradientsAt(t)). Returns false when it changed nothing
  // because the compressed exchange saw a non-finite input.
  virtual bool Step(int64_t t, const std::vector<at::Tensor>& grads) = 0;
  // Extra state of the derived optimizer: by name, or "p<i>/<name>" for
  // parameter i (loaded back as State(i, name), before LoadExtra runs).
  virtual void SaveExtra(comm::HookState* out) const {}
  virtual void LoadExtra(const std::map<std::string, at::Tensor>& saved) {}

  // All parameters in group order, and each one's group.
  const std::vector<at::Tensor>& params() const { return params_; }
  torch::optim::OptimizerOptions& GroupOptions(size_t i) { return param_groups_[group_of_[i]].options(); }
  // Per-parameter state `name`, created as zeros shaped like the parameter.
  at::Tensor& State(size_t i, const std::string& name);
  bool HasState(size_t i, const std::string& name) const;
  void DropState(size_t i, const std::string& name);
  // Per-parameter scalar state `name`, created as `initial`.
  double& Scalar(size_t i, const std::string& name, double initial);
  double ScalarOr(size_t i, const std::string& name, double fallback) const;
  int world() const;
  int rank() const;

  // In place, tensors[i] becomes the two-phase 1-bit compressed mean over
  // ranks of tensors[i] / denoms[i], times denoms[i]. The denominators are
  // Adam's sqrt(v) + eps, the same on every rank, so this is the mean of the
  // tensors, but the 1-bit error is spread evenly over the update m / denom
  // instead of landing on the elements with a small v, whose update it would
  // blow up (one scale per chunk spans layers and units whose gradients
  // differ by orders of magnitude). Elements whose v is 0 (no gradient yet:
  // dead units) come out 0, since one bit cannot say zero; then the momentum
  // masks apply. Before compression, tensors[i] / denoms[i] is clamped to
  // +-bounds[i] (see NormalisedBounds): with v stale or frozen, an element
  // whose gradient was rare when v was last updated can be thousands of
  // times its denominator, and would otherwise set its chunk's scale and so
  // every element's 1-bit value. The scale is mean |x| per chunk (not
  // DeepSpeed's RMS): sign compression with it is a contraction, so the
  // error feedback stays bounded. With a codec (Initialize) the normalised
  // tensors, shaped like their parameters, are one bucket of that hook
  // instead, with its own error feedback (top-k, ternary, PowerSGD of the
  // normalised momentum). With one rank nothing is compressed.
  // Returns false (tensors unchanged) when some rank's input was not finite.
  bool CompressedMean(std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& denoms,
                      const std::vector<at::Tensor>& v, const std::vector<double>& bounds);
  // Per parameter, 1 / sqrt(1 - beta2): the most |g| / sqrt(v) can be when v
  // has seen g (with v bias-corrected, too). Adam's normalised quantities
  // stay inside it; the 1-bit exchange clamps to it.
  std::vector<double> NormalisedBounds() const;
  // Forgets the worker and server errors (when the exchanged quantity changes).
  void ResetCompressedMean();

 private:
  void Reset();

  std::shared_ptr<comm::ProcessGroup> pg_;
  comm::DistributedDataParallel* ddp_ = nullptr;
  std::vector<at::Tensor> params_;
  std::vector<size_t> group_of_;
  std::vector<std::map<std::string, at::Tensor>> slots_;
  std::vector<at::Tensor> masks_;
  // The compressed exchange: the built-in 1-bit two-phase CompressionHook, or the codec's hook.
  std::shared_ptr<comm::CommHook> exchange_;
  std::string codec_;
  std::function<void(int64_t, const std::string&)> on_codec_adapt_;
  // The parameters' names in the codec's buckets (the module's, with DDP).
  std::vector<std::string> exchange_names_;
  std::shared_ptr<comm::CommHook> averaging_hook_;  // null: a fp32 mean allreduce
  // With DDP: whether the next backward averages gradients (read by the hook).
  std::shared_ptr<std::atomic<bool>> average_next_;
  std::string name_;
  std::string config_;
  int64_t block_ = 0;
  int64_t step_ = 0;
  std::vector<double> group_bound_;  // 1 / sqrt(1 - beta2) per parameter group
  OneBitStepStats last_;
};

}  // namespace lowbit::optim
