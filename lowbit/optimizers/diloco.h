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
//
// Streaming DiLoCo (Douillard et al. 2025, "Streaming DiLoCo with overlapping
// communication"; torchft's fragment_sync_delay and fragment_update_alpha):
// with `fragments` P > 1 the parameter list is cut into P runs of consecutive
// tensors of about equal size, and fragment p syncs at the steps
// floor(H (p + 1) / P) + k H, so one fragment is on the wire at a time and
// the bytes of a sync are those of one fragment. With `fragment_delay` tau > 0
// the exchange started at step t runs in the background (an async Work) while
// the next tau inner steps compute; at step t + tau the outer step updates the
// fragment's global copy and the local copy becomes
//   alpha * local + (1 - alpha) * global     (alpha: `merge_alpha`),
// so alpha = 0 (the default, torchft's) drops the tau local steps of that
// fragment and alpha = 0.5 keeps half (the paper's). P = 1, tau = 0 is
// DiLoCo. A checkpoint taken while a fragment is in flight waits for its
// exchange and saves the averaged pseudo-gradient; the outer step still lands
// at t + tau, so a resumed run continues bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
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
  // The exchange of the pseudo-gradient; null: a fp32 mean allreduce. With
  // fragment_delay > 0 DiLoCo turns the hook's overlap off
  // (CommHook::SetOverlap): its collectives then start in Step().
  TORCH_ARG(std::shared_ptr<comm::CommHook>, exchange_hook) = nullptr;
  // Streaming DiLoCo: P fragments synced on a staggered schedule (1 <= P <=
  // the number of parameter tensors, P <= sync_every).
  TORCH_ARG(int64_t, fragments) = 1;
  // Inner steps a fragment's exchange overlaps (tau < sync_every / P).
  TORCH_ARG(int64_t, fragment_delay) = 0;
  // The weight of the local copy when a fragment's new global copy lands.
  TORCH_ARG(double, merge_alpha) = 0.0;
};

// What the last Step() did.
struct DiLoCoStepStats {
  // A fragment's (with P = 1: the model's) outer step landed in this Step().
  bool synced = false;
  // A fragment's exchange started in this Step().
  bool started = false;
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
  // The pseudo-gradient buffer, in bytes: one fragment's (the largest), as
  // one fragment is in flight at a time; with P = 1 the model's.
  int64_t WorkingBytes() const;
  const std::string& Config() const { return config_; }
  const DiLoCoOptions& options() const { return options_; }
  // Fragment p is parameters [first, end) of the list given: every parameter
  // in exactly one fragment, in order.
  std::vector<std::pair<int64_t, int64_t>> Fragments() const;

  // The step count, the global parameters, the outer momentum, the exchange
  // hook's state and an in-flight fragment's averaged pseudo-gradient (Save
  // waits for its exchange: a collective's end, so every rank saves at the
  // same step, as train::Checkpoint does). A per-rank archive: with a
  // stateful hook (error feedback) each rank saves its own.
  void Save(torch::serialize::OutputArchive& archive);
  void Load(torch::serialize::InputArchive& archive);

 private:
  struct Fragment {
    size_t first = 0, end = 0;  // parameters [first, end)
    int64_t numel = 0;
    int64_t offset = 0;       // the schedule: starts at offset + k H
    comm::GradBucket bucket;  // views of flat_'s first numel elements
    std::shared_ptr<comm::Work> work;  // null once its result is in the bucket
    int64_t started = 0;               // in flight since this step (0: not in flight)
    bool bad = false;                  // the result: some rank's was not finite
  };
  // The fragment whose exchange starts at step s (-1: none).
  int64_t StartingAt(int64_t s) const;
  void Start(Fragment& f);
  void Arrive(Fragment& f);
  void Land(Fragment& f);

  std::vector<at::Tensor> params_;
  std::shared_ptr<comm::ProcessGroup> pg_;
  DiLoCoOptions options_;
  std::string config_;
  std::vector<at::Tensor> global_;
  std::vector<at::Tensor> momentum_;
  at::Tensor flat_;  // the pseudo-gradient; fragment p's is a contiguous run
  std::vector<Fragment> fragments_;
  int64_t step_ = 0;
  DiLoCoStepStats last_;
};

}  // namespace lowbit::optim
