// DiLoCo: low-communication data parallelism (Douillard et al. 2023,
// "DiLoCo: Distributed Low-Communication Training of Language Models",
// Algorithm 1; torchft's local_sgd.DiLoCo).
//
// Each rank trains on its own for `sync_every` (H) inner steps with any
// optimizer and no gradient exchange. Then the ranks average the
// pseudo-gradient, the global parameters minus the local ones,
//   delta = mean over ranks of (theta_global - theta_rank),
// an outer optimizer (SGD with Nesterov momentum, lr 0.7, momentum 0.9: the
// paper's) steps the global parameters with delta as their gradient, and
// every rank continues from the new global parameters. The inner optimizer's
// state stays each rank's own. The exchange of delta is a fp32 mean allreduce,
// or any comm hook (`exchange_hook`: fp16, qsgd 4-bit with error feedback,
// ...), whose state is saved with DiLoCo's.
//
//   lowbit::comm::DistributedDataParallel ddp(model, pg);   // broadcasts rank 0's weights
//   torch::optim::AdamW inner(model->parameters(), 1e-3);
//   lowbit::optim::DiLoCo outer(model->parameters(), ddp, lowbit::optim::DiLoCoOptions().sync_every(50));
//   // (DDP's hook is DiLoCo's now: backward exchanges nothing.)
//   for (...) { inner.zero_grad(); loss().backward(); inner.step(); outer.Step(); }
//
// At construction every rank takes rank 0's parameters (as DDP does) and the
// settings and parameter shapes are compared across ranks. To resume, build
// DiLoCo first and then restore the model and Load() (as train::Checkpoint's
// Restore does): the local parameters differ across ranks mid-interval.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/process_group.h"

namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize

namespace lowbit::comm {
class DistributedDataParallel;
}  // namespace lowbit::comm

namespace lowbit::optim {

struct DiLoCoOptions {
  // Inner steps between synchronisations (H).
  TORCH_ARG(int64_t, sync_every) = 50;
  TORCH_ARG(double, outer_lr) = 0.7;
  TORCH_ARG(double, outer_momentum) = 0.9;
  TORCH_ARG(bool, nesterov) = true;
  // The exchange of the pseudo-gradient; null: a fp32 mean allreduce.
  TORCH_ARG(std::shared_ptr<comm::CommHook>, exchange_hook) = nullptr;
};

// What the last Step() did.
struct DiLoCoStepStats {
  bool synced = false;
  // Bytes this rank sent in that Step().
  int64_t bytes_sent = 0;
  // Some rank's pseudo-gradient was not finite: the global parameters, the
  // outer momentum and the hook's state were left as they were, and every
  // rank went back to them.
  bool nonfinite = false;
};

class DiLoCo {
 public:
  DiLoCo(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, DiLoCoOptions options = {});
  // With DDP: takes over its comm hook (comm::LocalHook: backward exchanges
  // nothing), so registering another hook afterwards throws, naming DiLoCo.
  DiLoCo(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, DiLoCoOptions options = {});
  ~DiLoCo();
  DiLoCo(const DiLoCo&) = delete;
  DiLoCo& operator=(const DiLoCo&) = delete;

  // Call after each inner optimizer step; every sync_every-th call
  // synchronises (a collective: every rank calls it the same number of times).
  void Step();
  // Inner steps taken (Step() calls).
  int64_t steps() const { return step_; }
  const DiLoCoStepStats& LastStepStats() const { return last_; }
  // Extra bytes of state per parameter element beyond the model's (the global
  // copy and the outer momentum; an exchange hook's state not counted).
  int64_t StateBytesPerElement() const;
  const std::string& Config() const { return config_; }

  // The step count, the global parameters, the outer momentum and the
  // exchange hook's state. A per-rank archive: with a stateful hook (error
  // feedback) each rank saves its own.
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

 private:
  void Sync();

  std::vector<at::Tensor> params_;
  std::shared_ptr<comm::ProcessGroup> pg_;
  DiLoCoOptions options_;
  std::string config_;
  std::vector<at::Tensor> global_;
  std::vector<at::Tensor> momentum_;
  at::Tensor flat_;  // the pseudo-gradient, as one bucket
  comm::GradBucket bucket_;
  int64_t step_ = 0;
  DiLoCoStepStats last_;
};

}  // namespace lowbit::optim
