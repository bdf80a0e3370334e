// DistributedDataParallel: data-parallel training for a LibTorch C++ module.
//
// At construction it checks that every rank holds the same model (parameter
// names, shapes and dtypes; the first difference is named in the error) and
// broadcasts parameters and buffers from rank 0. Gradients live as views into
// flat buckets built in reverse parameter order (first bucket ~1 MB, the rest
// ~25 MB). A hook on each parameter's gradient accumulator hands a bucket to
// the comm hook as soon as its gradients are ready, so communication overlaps
// the rest of backward; buckets are launched in order. When backward ends,
// the averaged gradients are in place (see Note [Gradient sync]).
//
//   auto model = std::make_shared<Net>();
//   lowbit::comm::DistributedDataParallel ddp(model, pg);
//   for (auto& batch : loader) {
//     optimizer.zero_grad();
//     torch::nll_loss(model->forward(batch.data), batch.target).backward();
//     optimizer.step();                       // gradients are already averaged
//   }
//
// Gradient accumulation: backward passes inside `auto guard = ddp.NoSync();`
// only accumulate locally; the next backward outside it averages the sum.
//
// Build DDP after everything that adds parameters to the model
// (lowbit::qat::Prepare, a late register_parameter, requires_grad turned
// on): its buckets hold the parameters it found then. Each synchronised
// step, when the first bucketed gradient arrives, DDP compares the model's
// trainable parameters with its buckets (one walk over the module tree:
// 1.2 us for 8 tensors, 37 us for 200, bench/ddp_bench) and
// throws on every rank, naming the tensors, if one was added or removed:
// otherwise those gradients would never be averaged and the ranks would
// drift apart without a word.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/process_group.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace lowbit::comm {

struct DdpOptions {
  double first_bucket_mb = 1.0;
  double bucket_cap_mb = 25.0;
  // Broadcast rank 0's buffers (e.g. BatchNorm statistics) after each sync.
  bool broadcast_buffers = true;
};

// What one synchronised step cost. Bytes as in TrafficCounters.
struct DdpStepStats {
  // What the process group carried from the start of this step's backward to
  // the start of the next one's (for the latest step: to the LastStepStats()
  // call): the bucket exchanges, the buffer broadcast, and the exchange of an
  // optimizer that owns DDP's hook (the 1-bit family, DiLoCo, DeMo), which
  // runs in its step() after backward. Collectives of the program's own in
  // that window (an evaluation's allreduce, a checkpoint's agreement) count
  // too.
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  // The bucket exchanges of backward alone (zero while an owning optimizer's
  // hook keeps gradients local).
  int64_t exchange_bytes_sent = 0;
  int64_t exchange_bytes_received = 0;
  // Gradient bytes of the step, i.e. what an uncompressed allreduce carries.
  int64_t dense_bytes = 0;
  // Sum of the durations of the step's bucket exchanges.
  double comm_seconds = 0.0;
  // How long the end of backward blocked on communication that was still running.
  double wait_seconds = 0.0;
  // Time spent inside the comm hook's RunHook calls, on the backward thread
  // (a compression hook's encoding, or with its overlap on, only handing the
  // bucket to its own thread).
  double launch_seconds = 0.0;
  int buckets = 0;
  // Parameters that got no gradient this step on this rank (sent as zeros).
  int unused_parameters = 0;
  // A hook found NaN/Inf in some rank's gradients: the gradients are NaN, the
  // hook's state is unchanged, and the optimizer step should be skipped.
  bool nonfinite = false;
};

class DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<ProcessGroup> pg,
                          DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  torch::nn::Module& module() const;
  ProcessGroup& process_group() const;
  std::shared_ptr<ProcessGroup> shared_process_group() const;

  // Sets the comm hook in place of the default AllReduceHook. Once: a second
  // registration throws naming both hooks (DDP runs one hook, so the second
  // would silently drop the first; to switch hooks mid-run, call
  // UnregisterCommHook() first; to combine methods, see TwoLevelHook and the
  // compression hook's options). A hook whose Config() is the default's
  // ("allreduce") counts as the default: another may replace it. The hook's Config() must be the same on
  // every rank; a mismatch throws on all ranks. Throws, naming the owner and
  // its option, once an optimizer owns the hook (RegisterOwnedCommHook).
  void RegisterCommHook(std::shared_ptr<CommHook> hook);
  // Back to the default AllReduceHook, so that RegisterCommHook may set
  // another. The old hook's state (error feedback, warm starts) goes with it.
  // Throws when an optimizer owns the hook.
  void UnregisterCommHook();
  // For optimizers that do their own exchange (the 1-bit family, DiLoCo,
  // DeMo): registers `hook`, and from then on RegisterCommHook and
  // UnregisterCommHook throw naming `owner` and `exchange_option` (the
  // owner's option that takes a hook for the exchange it does allow, e.g.
  // "OneBitAdamOptions::averaging_hook"; empty when it has none), since
  // another hook would silently break that optimizer. Throws the same way if
  // the user already registered a hook, which the owner would silently drop.
  void RegisterOwnedCommHook(std::shared_ptr<CommHook> hook, const std::string& owner,
                             const std::string& exchange_option = "");
  // The owner's name, empty when no optimizer owns the hook.
  std::string comm_hook_owner() const;
  CommHook& comm_hook() const;

  // Completes the gradient exchange of the current step. Backward already
  // calls it when it ends; calling it again is a no-op.
  void FinishGradientSync();

  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallel* ddp);
    NoSyncGuard(NoSyncGuard&& other) noexcept;
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(NoSyncGuard&&) = delete;
    ~NoSyncGuard();

   private:
    DistributedDataParallel* ddp_;
  };
  // While the returned guard lives, backward accumulates gradients locally.
  [[nodiscard]] NoSyncGuard NoSync();

  // Broadcasts rank 0's parameters and buffers to all ranks.
  void BroadcastState();

  // When the first synchronised backward ends, DDP broadcasts rank 0's
  // parameters once more if any rank's were written since DDP was built (a
  // parameter that a module sets from its first batch, as QAT's step sizes
  // without Calibrate, would otherwise start different on each rank). Call
  // this after loading each rank's own saved parameters, which must stay as
  // they are (a local-step method such as DiLoCo resumed mid-round);
  // train::Checkpoint::Restore calls it.
  void ParametersRestored();

  // The latest synchronised step's statistics (see DdpStepStats::bytes_sent
  // for the window its bytes cover).
  DdpStepStats LastStepStats() const;
  // Parameter names per bucket, in launch order.
  std::vector<std::vector<std::string>> BucketLayout() const;

  struct Impl;  // internal; shared with the autograd hooks

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace lowbit::comm
