#include "lowbit/comm/hooks.h"

#include <c10/util/Exception.h>

#include <algorithm>

#include "lowbit/comm/compression_hook.h"
#include "lowbit/comm/compressors.h"
#include "lowbit/comm/powersgd_hook.h"

namespace lowbit::comm {
namespace {

std::optional<Exchange> ParseExchange(const std::string& name) {
  if (name == "auto") return std::nullopt;
  if (name == "allreduce") return Exchange::kAllReduce;
  if (name == "allgather") return Exchange::kAllGather;
  if (name == "twophase") return Exchange::kTwoPhase;
  TORCH_CHECK(false, "exchange must be auto, allreduce, allgather or twophase, got '", name, "'");
}

}  // namespace

std::shared_ptr<CommHook> MakeCommHook(std::shared_ptr<ProcessGroup> pg, const HookSpec& spec) {
  if (spec.name == "allreduce" || spec.name == "none") return std::make_shared<AllReduceHook>(std::move(pg));
  if (spec.name == "powersgd") {
    TORCH_CHECK(spec.error_feedback.empty() || spec.error_feedback == "ef" || spec.error_feedback == "none",
                "powersgd supports error feedback ef or none, got '", spec.error_feedback, "'");
    PowerSgdOptions options;
    options.rank = spec.rank;
    options.start_iter = spec.start_iter >= 0 ? spec.start_iter : 10;
    options.warm_start = spec.warm_start;
    options.min_compression_rate = spec.min_compression_rate;
    options.error_feedback = spec.error_feedback != "none";
    options.seed = spec.seed;
    return std::make_shared<PowerSgdHook>(std::move(pg), options);
  }
  CompressionHookOptions options;
  std::string default_ef = "ef";
  TORCH_CHECK(spec.rounding.empty() || spec.rounding == "stochastic" || spec.rounding == "nearest",
              "rounding must be stochastic or nearest, got '", spec.rounding, "'");
  const int64_t block = spec.block > 0 ? spec.block : 256;
  if (spec.name == "fp16" || spec.name == "bf16") {
    options.compressor = MakeCastCompressor(spec.name == "fp16" ? at::kHalf : at::kBFloat16);
    default_ef = "none";
  } else if (spec.name == "qsgd") {
    options.compressor = MakeQsgdCompressor(spec.bits, block, spec.rounding != "nearest");
  } else if (spec.name == "ternary") {
    options.compressor = MakeTernaryCompressor(block, spec.rounding == "stochastic");
  } else if (spec.name == "onebit") {
    options.compressor = MakeSignCompressor(block, spec.scale_norm);
  } else if (spec.name == "topk") {
    TopKOptions topk;
    topk.density = spec.density;
    topk.sample_ratio = spec.sample_ratio;
    topk.warmup_steps = spec.warmup_steps;
    options.compressor = MakeTopKCompressor(topk);
  } else if (spec.name == "randomk") {
    options.compressor = MakeRandomKCompressor(spec.density);
  } else {
    TORCH_CHECK(false, "hook must be one of none, allreduce, fp16, bf16, qsgd, onebit, topk, randomk, powersgd, ",
                "ternary; got '", spec.name, "'");
  }
  options.error_feedback =
      MakeErrorFeedback(spec.error_feedback.empty() ? default_ef : spec.error_feedback, spec.ef_eta);
  options.exchange = ParseExchange(spec.exchange);
  options.min_compress_numel = spec.min_compress_numel;
  options.compress_1d = spec.compress_1d;
  options.seed = spec.seed;
  TORCH_CHECK(spec.name == "topk" || (spec.momentum == 0.0 && spec.clip_norm == 0.0),
              "momentum correction and clip_norm are top-k (DGC) options; hook is '", spec.name, "'");
  options.start_iter = std::max<int64_t>(spec.start_iter, 0);
  options.momentum = spec.momentum;
  options.clip_norm = spec.clip_norm;
  return std::make_shared<CompressionHook>(std::move(pg), options);
}

}  // namespace lowbit::comm
