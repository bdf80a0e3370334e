// CompressionHook: a DDP comm hook built from a Compressor, an ErrorFeedback
// policy and an Exchange (see comm/compressor.h, compress/error_feedback.h).
//
//   CompressionHookOptions o;
//   o.compressor = MakeSignCompressor();
//   o.error_feedback = MakeErrorFeedback("ef");
//   ddp.RegisterCommHook(std::make_shared<CompressionHook>(pg, o));
//
// Per bucket: parameters that are 1-D or smaller than `min_compress_numel`
// travel uncompressed in one mean allreduce (with a flag saying whether any
// rank's bucket holds NaN/Inf); the rest are compressed per parameter (per
// chunk of their concatenation for the two-phase exchange) after the error
// feedback policy and, for DGC, momentum correction and local clipping. See
// Note [Compressed exchange] in compression_hook.cpp.
//
// Non-finite gradients on any rank: every rank's bucket becomes NaN, the
// hook's Result()[1] (and DdpStepStats::nonfinite) says so, and no state is
// changed, so the caller can skip the optimizer step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/compressor.h"
#include "lowbit/compress/error_feedback.h"
#include "lowbit/compress/defaults.h"

namespace lowbit::compress::internal {
class SerialWorker;
}  // namespace lowbit::compress::internal

namespace lowbit::compress {

struct CompressionHookOptions {
  std::shared_ptr<Compressor> compressor;
  // Default: classic error feedback.
  std::shared_ptr<ErrorFeedback> error_feedback;
  // Default: the compressor's DefaultExchange().
  std::optional<Exchange> exchange;
  // Tensors with fewer elements, and 1-D tensors unless `compress_1d`, are
  // sent uncompressed.
  int64_t min_compress_numel = defaults::kMinCompressNumel;
  bool compress_1d = false;
  // The tensors sent uncompressed (those above, and every tensor during
  // start_iter) go as fp16 (their mean's share x / P, summed), half the
  // bytes; false: fp32.
  bool plain_fp16 = false;
  // The first `start_iter` steps are a plain mean allreduce and leave the
  // error-feedback state alone (1-bit Adam's and PowerSGD's warm-up).
  int64_t start_iter = 0;
  // Seeds stochastic rounding and random selections.
  uint64_t seed = 0;
  // Deep Gradient Compression (Lin et al. 2018): momentum correction
  // u = m u + g, compressing the accumulated u, with momentum factor masking
  // (u = 0 where sent); use it with plain SGD. 0 = off.
  double momentum = 0.0;
  // DGC's local gradient clipping: each tensor's L2 norm is capped at
  // clip_norm / sqrt(world size). 0 = off.
  double clip_norm = 0.0;
  // Prepare, encode and start each bucket's exchange on a thread of the
  // hook's own, so backward goes on meanwhile; false: on the backward thread.
  // The results are the same bits either way. Not a setting ranks must share.
  bool overlap = true;
};

class CompressionHook final : public comm::CommHook {
 public:
  CompressionHook(std::shared_ptr<comm::ProcessGroup> pg, CompressionHookOptions options);
  ~CompressionHook() override;

  std::string Name() const override;
  std::string Config() const override;
  std::shared_ptr<comm::Work> RunHook(comm::GradBucket& bucket) override;
  // "meta/world_size", "meta/step" and "<parameter>/<tensor>" per parameter.
  comm::HookState StateDict() const override;
  // A state from another world size is dropped with a warning.
  void LoadStateDict(const comm::HookState& state) override;
  // CompressionHookOptions::overlap from the next bucket on.
  void SetOverlap(bool on) override { options_.overlap = on; }

  // From the next bucket on, parameter `name` is compressed with
  // `compressor` instead of options.compressor, or sent uncompressed when it
  // is null, whatever its size. Its error-feedback state is kept. Must be
  // called identically on every rank, between steps. Not for the two-phase
  // exchange, whose chunks span parameters.
  void SetLayerCompressor(const std::string& name, std::shared_ptr<Compressor> compressor);

  Exchange exchange() const { return exchange_; }
  int64_t step() const { return step_; }

 private:
  struct Pending;
  // Everything RunHook does after choosing each tensor's compressor, up to
  // starting the exchange; on worker_ when options.overlap.
  void Launch(Pending* job);
  std::vector<at::Tensor> Finish(Pending& job);
  void EncodeAllReduce(Pending& job);
  void EncodeAllGather(Pending& job);
  void EncodeTwoPhase(Pending& job);
  void DecodeAllReduce(Pending& job);
  void DecodeAllGather(Pending& job);
  void DecodeTwoPhase(Pending& job);
  EncodeContext Context(int rank, uint64_t tensor_key, uint64_t phase, int64_t step) const;
  // The compressor for parameter `name`, or null: send it uncompressed.
  std::shared_ptr<Compressor> CompressorFor(const std::string& name, const at::Tensor& grad) const;

  std::shared_ptr<comm::ProcessGroup> pg_;
  CompressionHookOptions options_;
  Exchange exchange_;
  int64_t step_ = 0;
  // Keyed by parameter name (or "bucket:<first parameter>" for the two-phase
  // server error), so rebuilding buckets keeps it.
  std::map<std::string, FeedbackState> state_;
  std::map<std::string, std::shared_ptr<Compressor>> layer_compressor_;
  // Last: destroyed first, running what is queued while the rest still lives.
  std::unique_ptr<internal::SerialWorker> worker_;
};

// A stable 64-bit key of a name (FNV-1a), for the random streams.
uint64_t NameKey(const std::string& name);

}  // namespace lowbit::compress
