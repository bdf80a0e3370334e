// SparseLoCo's exchange (Sarfi et al. 2025, "Communication Efficient LLM
// Pre-training with SparseLoCo"): error feedback with decay, chunked top-k,
// a few bits per kept value, an all-gather and the mean. Per tensor g of the
// bucket, with e the rank's error-feedback buffer:
//   e <- decay * e + g
//   c <- Q(TopK(e))          chunked top-k (compress/chunked_topk.h); Q maps
//                             each kept value to one of 2^bits bins spread
//                             over mean +- range_sigmas * std of the kept
//                             values and sends the bin; the bin's value is
//                             the mean of the kept values that fell in it
//                             (a 2^bits table per tensor travels along)
//   e <- e - c
//   result = (1/R) sum over ranks of c_r
// Under DiLoCo (optim::DiLoCo with outer_momentum 0) the buffer stands in
// for the outer momentum: that pair is SparseLoCo. A rank sends, per kept
// value, a 16-bit offset in its chunk and `bits` bits: with the defaults
// (64 of every 4096, 2 bits) 0.035 bytes per element, 113x fewer than fp32.
//
// Result(): {the bucket's buffer holding the mean, a flag: 1 when some rank's
// input was not finite (that rank's buffer is left as it was, the others'
// hold this round's residual)}. State: the error-feedback buffers, per
// parameter name (saved and restored exactly).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <torch/arg.h>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::compress {

struct SparseLoCoHookOptions {
  TORCH_ARG(int64_t, chunk) = 4096;
  // Entries kept per chunk.
  TORCH_ARG(int64_t, topk) = 64;
  // Bits per kept value: 1, 2, 4 or 8.
  TORCH_ARG(int64_t, bits) = 2;
  // The error-feedback buffer's decay (beta).
  TORCH_ARG(double, decay) = 0.95;
  // The bins span mean +- range_sigmas standard deviations of the kept values.
  TORCH_ARG(double, range_sigmas) = 6.0;
};

class SparseLoCoHook final : public comm::CommHook {
 public:
  SparseLoCoHook(std::shared_ptr<comm::ProcessGroup> pg, SparseLoCoHookOptions options = {});
  std::string Name() const override { return "sparseloco"; }
  std::string Config() const override;
  std::shared_ptr<comm::Work> RunHook(comm::GradBucket& bucket) override;
  comm::HookState StateDict() const override;
  void LoadStateDict(const comm::HookState& state) override;
  // The bytes one rank sends for a bucket of these tensor sizes.
  int64_t PayloadBytes(const std::vector<int64_t>& numels) const;

 private:
  std::shared_ptr<comm::ProcessGroup> pg_;
  SparseLoCoHookOptions options_;
  std::map<std::string, at::Tensor> error_;
};

}  // namespace lowbit::compress
