// PowerSgdHook: low-rank gradient compression (Vogels, Karimireddy, Jaggi,
// "PowerSGD", NeurIPS 2019), as in PyTorch's powerSGD_hook.
//
//   PowerSgdOptions o;
//   o.rank = 4;
//   ddp.RegisterCommHook(std::make_shared<PowerSgdHook>(pg, o));
//
// For the first `start_iter` steps the bucket is allreduced uncompressed.
// Then each parameter viewed as an n x m matrix (n = its first dimension) with
// r = min(n, m, rank) and (n + m) r < n m / min_compression_rate is compressed:
// M = grad + error; P = M Q (Q warm-started, or random from a seed shared by
// all ranks); allreduce P; orthogonalise P (Gram-Schmidt in fp32);
// Q = M^T P; allreduce Q; Q /= world; estimate = P Q^T; error = M - estimate.
// Same-shape matrices are batched. The rest (1-D tensors, matrices too small
// to gain) ride in the first allreduce uncompressed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/error_feedback.h"
#include "lowbit/compress/defaults.h"

namespace lowbit::compress {

struct PowerSgdOptions {
  int rank = defaults::kPowerSgdRank;
  int64_t start_iter = defaults::kPowerSgdStartIter;
  bool warm_start = true;
  double min_compression_rate = defaults::kMinCompressionRate;
  bool error_feedback = true;
  uint64_t seed = 0;
};

// The rank PowerSgdHook compresses a gradient of `shape` with when asked for
// `rank`: min(n, m, rank) for the n x m view (n = shape[0]) if that shrinks it
// by more than `min_compression_rate`, else 0 (sent uncompressed; also for
// 1-D, empty and rank 0).
int64_t PowerSgdRank(at::IntArrayRef shape, int64_t rank, double min_compression_rate);

class PowerSgdHook final : public comm::CommHook {
 public:
  PowerSgdHook(std::shared_ptr<comm::ProcessGroup> pg, PowerSgdOptions options);

  std::string Name() const override { return "powersgd"; }
  std::string Config() const override;
  std::shared_ptr<comm::Work> RunHook(comm::GradBucket& bucket) override;
  // "meta/*" and per compressed parameter "<name>/error", "<name>/Q".
  comm::HookState StateDict() const override;
  void LoadStateDict(const comm::HookState& state) override;

  // From the next step on, parameter `name` uses rank `rank` (still capped
  // at min(n, m) and subject to min_compression_rate), or goes uncompressed
  // when `rank` is 0. Its error is kept; a warm-start Q keeps its first
  // min(old, new) columns. Must be called identically on every rank, between
  // steps.
  void SetLayerRank(const std::string& name, int rank);

  int64_t step() const { return step_; }

 private:
  struct Pending;
  std::vector<at::Tensor> Finish(Pending& job);

  std::shared_ptr<comm::ProcessGroup> pg_;
  PowerSgdOptions options_;
  int64_t step_ = 0;
  std::map<std::string, FeedbackState> state_;
  std::map<std::string, int> layer_rank_;
};

}  // namespace lowbit::compress
