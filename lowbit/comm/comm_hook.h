// CommHook: how DistributedDataParallel exchanges one bucket of gradients.
//
// DDP hands each bucket to the registered hook as soon as all its gradients
// are ready, while backward goes on; the hook starts its exchange and returns
// a Work whose Result()[0] is the flat gradient averaged over ranks (it may
// write it into bucket.buffer itself). An optional Result()[1], a one-element
// tensor, is nonzero when some rank's gradients were not finite (see
// DdpStepStats::nonfinite). The default hook, AllReduceHook, is a
// mean allreduce; compression hooks (1-bit, top-k, PowerSGD, ...) implement
// the same interface.
//
//   ddp.RegisterCommHook(std::make_shared<lowbit::comm::AllReduceHook>(pg));
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lowbit/comm/process_group.h"

namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize

namespace lowbit::comm {

// One bucket of gradients. `gradients[i]` (shaped like parameter i) aliases
// `buffer` at element offset `offsets[i]`.
struct GradBucket {
  size_t index = 0;
  bool is_last = false;
  at::Tensor buffer;
  std::vector<at::Tensor> gradients;
  std::vector<std::string> parameter_names;
  std::vector<int64_t> offsets;
};

// Named tensors of a hook's per-rank state (error-feedback residuals, warm
// starts, ...), saved with a checkpoint and restored exactly.
using HookState = std::vector<std::pair<std::string, at::Tensor>>;

// A HookState in a torch::serialize archive, under `prefix`. Entry names may
// hold '.' and '/', which archive keys cannot, so the tensors are stored as
// <prefix>t0, <prefix>t1, ... and their names in <prefix>names.
void WriteHookState(torch::serialize::OutputArchive& archive, const HookState& state, const std::string& prefix = "");
HookState ReadHookState(torch::serialize::InputArchive& archive, const std::string& prefix = "");

class CommHook {
 public:
  virtual ~CommHook() = default;
  virtual std::string Name() const = 0;
  // The hook's name and every setting that must agree across ranks; DDP
  // compares it across ranks when the hook is registered.
  virtual std::string Config() const = 0;
  // Starts exchanging `bucket`; see the file comment for the result.
  virtual std::shared_ptr<Work> RunHook(GradBucket& bucket) = 0;
  virtual HookState StateDict() const = 0;
  virtual void LoadStateDict(const HookState& state) = 0;
  // Whether the hook may start a bucket's collectives off the calling thread
  // (CompressionHook's overlap). An owner that runs other collectives while
  // an exchange is in flight turns it off, so that every rank issues its
  // collectives in one order (Streaming DiLoCo). The same bits either way;
  // hooks that always start on the calling thread ignore it.
  virtual void SetOverlap(bool on) {}
};

// The default: an in-place mean allreduce of the bucket. Stateless.
class AllReduceHook final : public CommHook {
 public:
  explicit AllReduceHook(std::shared_ptr<ProcessGroup> pg) : pg_(std::move(pg)) {}
  std::string Name() const override { return "allreduce"; }
  std::string Config() const override { return "allreduce"; }
  std::shared_ptr<Work> RunHook(GradBucket& bucket) override {
    return pg_->AllReduce(bucket.buffer, ReduceOp::kAvg);
  }
  HookState StateDict() const override { return {}; }
  void LoadStateDict(const HookState&) override {}

 private:
  std::shared_ptr<ProcessGroup> pg_;
};

// No exchange: every rank keeps its own gradients (local steps, as DiLoCo's
// inner steps). Stateless.
class LocalHook final : public CommHook {
 public:
  std::string Name() const override { return "local"; }
  std::string Config() const override { return "local"; }
  std::shared_ptr<Work> RunHook(GradBucket& bucket) override {
    return std::make_shared<CompletedWork>(std::vector<at::Tensor>{bucket.buffer});
  }
  HookState StateDict() const override { return {}; }
  void LoadStateDict(const HookState&) override {}
};

}  // namespace lowbit::comm
