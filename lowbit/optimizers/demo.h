// DeMo: decoupled momentum optimization (Peng, Quesnelle & Kingma 2024,
// "DeMo: Decoupled Momentum Optimization"; the authors' reference optimizer).
//
// Each rank keeps its own momentum and sends only its fast-moving part: per
// parameter, with lr the group's learning rate,
//   m <- beta * m + lr * g                    (g: this rank's gradient, no exchange)
//   Y <- DCT(m) by chunks                     (2-D parameters: s1 x s2 tiles,
//                                              s the largest divisor of each
//                                              side <= chunk; others: flat
//                                              runs of s <= chunk)
//   q <- the `topk` largest |Y| of each chunk
//   m <- m - IDCT(q)                          (what is sent leaves the momentum)
//   Q <- IDCT(per coefficient, the mean over the ranks that sent it)   (all-gather)
//   theta <- theta * (1 - lr * weight_decay) - lr * sign(Q)
// A rank sends a 16-bit position and a float per kept coefficient: with the
// defaults (32 of every 64 x 64 tile) 85x fewer bytes than fp32 gradients.
// The DCT is orthonormal (DCT-II; its inverse is its transpose).
//
//   lowbit::comm::DistributedDataParallel ddp(model, pg);
//   lowbit::optim::DeMo opt(model->parameters(), ddp, lowbit::optim::DeMoOptions(1e-3));
//   // DDP's hook is DeMo's now (comm::LocalHook): backward exchanges nothing.
//   for (...) { opt.zero_grad(); loss().backward(); opt.step(); }
//
// Settings and shapes are compared across ranks at construction; state (the
// momentum, per rank) is saved with save() and restored exactly by load().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include "lowbit/comm/process_group.h"

namespace lowbit::comm {
class DistributedDataParallel;
}  // namespace lowbit::comm

namespace lowbit::optim {

struct DeMoOptions : public torch::optim::OptimizerCloneableOptions<DeMoOptions> {
  DeMoOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT: implicit, as torch::optim::AdamOptions
  // Per parameter group.
  TORCH_ARG(double, lr) = 1e-3;
  // Decoupled: theta *= 1 - lr * weight_decay.
  TORCH_ARG(double, weight_decay) = 0.0;
  // Per optimizer (taken from the defaults).
  // The momentum's decay (the reference's compression_decay).
  TORCH_ARG(double, beta) = 0.999;
  // The DCT tile side (2-D) or run (others).
  TORCH_ARG(int64_t, chunk) = 64;
  // Coefficients sent per tile.
  TORCH_ARG(int64_t, topk) = 32;

  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct DeMoStepStats {
  int64_t bytes_sent = 0;
  // Some rank's momentum was not finite: nothing changed on any rank.
  bool skipped = false;
};

class DeMo final : public torch::optim::Optimizer {
 public:
  DeMo(std::vector<torch::optim::OptimizerParamGroup> groups, std::shared_ptr<comm::ProcessGroup> pg,
       DeMoOptions defaults = {});
  DeMo(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, DeMoOptions defaults = {});
  // With DDP: takes over its comm hook (comm::LocalHook), so registering
  // another hook afterwards throws, naming DeMo.
  DeMo(std::vector<torch::optim::OptimizerParamGroup> groups, comm::DistributedDataParallel& ddp,
       DeMoOptions defaults = {});
  ~DeMo() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  const DeMoStepStats& LastStepStats() const { return last_; }
  int64_t steps() const { return step_; }
  const std::string& Config() const { return config_; }
  // The bytes one rank sends per step.
  int64_t PayloadBytes() const { return payload_bytes_; }
  // Coefficients kept per step over all parameters, and the elements.
  int64_t KeptPerStep() const { return kept_; }
  int64_t Elements() const { return elements_; }

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  struct Plan;  // per parameter: the tiles and their DCT matrices
  std::shared_ptr<comm::ProcessGroup> pg_;
  std::vector<at::Tensor> params_;
  std::vector<size_t> group_of_;
  std::vector<std::unique_ptr<Plan>> plans_;
  std::vector<at::Tensor> momentum_;
  std::string config_;
  int64_t payload_bytes_ = 0, kept_ = 0, elements_ = 0, step_ = 0;
  DeMoStepStats last_;
};

}  // namespace lowbit::optim
