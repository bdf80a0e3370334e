#include "lowbit/comm/hooks.h"

#include <c10/util/Exception.h>

#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

#include <algorithm>

#include "lowbit/comm/adaptive_hook.h"
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

PowerSgdOptions PowerSgdFrom(const HookSpec& spec) {
  TORCH_CHECK(spec.error_feedback.empty() || spec.error_feedback == "ef" || spec.error_feedback == "none",
              "powersgd supports error feedback ef or none, got '", spec.error_feedback, "'");
  PowerSgdOptions options;
  options.rank = spec.rank;
  options.start_iter = spec.start_iter >= 0 ? spec.start_iter : 10;
  options.warm_start = spec.warm_start;
  options.min_compression_rate = spec.min_compression_rate;
  options.error_feedback = spec.error_feedback != "none";
  options.seed = spec.seed;
  return options;
}

// "pattern=value,pattern=plain" -> rules, in order.
std::vector<std::shared_ptr<LayerRule>> ParseOverrides(const std::string& text) {
  std::vector<std::shared_ptr<LayerRule>> rules;
  if (text.empty()) return rules;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const size_t eq = item.rfind('=');
    TORCH_CHECK(eq != absl::string_view::npos && eq > 0 && eq + 1 < item.size(),
                "adapt override must be pattern=value or pattern=plain, got '", std::string(item), "'");
    const std::string pattern(item.substr(0, eq));
    const absl::string_view value = item.substr(eq + 1);
    double v = 0;
    if (value == "plain") {
      rules.push_back(NameOverrideRule(pattern, std::nullopt));
    } else {
      TORCH_CHECK(absl::SimpleAtod(value, &v), "adapt override for '", pattern,
                  "' must be a number or plain, got '", std::string(value), "'");
      rules.push_back(NameOverrideRule(pattern, v));
    }
  }
  return rules;
}

std::shared_ptr<CommHook> MakeAdaptiveHook(std::shared_ptr<ProcessGroup> pg, const HookSpec& spec,
                                           CompressionHookOptions compression) {
  AdaptiveOptions o;
  if (spec.name == "adaptive_powersgd") {
    o.family = AdaptiveFamily::kPowerSgd;
    o.default_value = spec.rank;
    o.powersgd = PowerSgdFrom(spec);
  } else if (spec.name == "adaptive_topk") {
    o.family = AdaptiveFamily::kTopK;
    o.default_value = spec.density;
    o.topk.sample_ratio = spec.sample_ratio;
    o.topk.warmup_steps = spec.warmup_steps;
  } else {
    o.family = AdaptiveFamily::kQsgd;
    o.default_value = spec.bits;
    o.qsgd_block = spec.block > 0 ? spec.block : 256;
    o.qsgd_stochastic = spec.rounding != "nearest";
  }
  o.compression = std::move(compression);
  o.candidates = spec.adapt_candidates ? *spec.adapt_candidates : DefaultCandidates(o.family, o.default_value);
  o.rules = ParseOverrides(spec.adapt_overrides);
  for (auto& rule : DefaultLayerRules(o.family, spec.min_compress_numel, spec.compress_1d)) o.rules.push_back(rule);
  o.period = spec.adapt_period;
  o.window = spec.adapt_window;
  o.alpha = spec.adapt_alpha;
  o.on_change = spec.on_adapt;
  return std::make_shared<AdaptiveHook>(std::move(pg), std::move(o));
}

}  // namespace

std::shared_ptr<CommHook> MakeCommHook(std::shared_ptr<ProcessGroup> pg, const HookSpec& spec) {
  if (spec.name == "allreduce" || spec.name == "none") return std::make_shared<AllReduceHook>(std::move(pg));
  if (spec.name == "powersgd") return std::make_shared<PowerSgdHook>(std::move(pg), PowerSgdFrom(spec));
  if (spec.name == "adaptive_powersgd") return MakeAdaptiveHook(std::move(pg), spec, {});
  const bool adaptive = spec.name == "adaptive_topk" || spec.name == "adaptive_qsgd";
  CompressionHookOptions options;
  std::string default_ef = "ef";
  TORCH_CHECK(spec.rounding.empty() || spec.rounding == "stochastic" || spec.rounding == "nearest",
              "rounding must be stochastic or nearest, got '", spec.rounding, "'");
  const int64_t block = spec.block > 0 ? spec.block : 256;
  if (spec.name == "fp16" || spec.name == "bf16") {
    options.compressor = MakeCastCompressor(spec.name == "fp16" ? at::kHalf : at::kBFloat16);
    default_ef = "none";
  } else if (spec.name == "qsgd" || spec.name == "adaptive_qsgd") {
    options.compressor = MakeQsgdCompressor(spec.bits, block, spec.rounding != "nearest");
  } else if (spec.name == "ternary") {
    options.compressor = MakeTernaryCompressor(block, spec.rounding == "stochastic");
  } else if (spec.name == "onebit") {
    options.compressor = MakeSignCompressor(block, spec.scale_norm);
  } else if (spec.name == "topk" || spec.name == "adaptive_topk") {
    TopKOptions topk;
    topk.density = spec.density;
    topk.sample_ratio = spec.sample_ratio;
    topk.warmup_steps = spec.warmup_steps;
    options.compressor = MakeTopKCompressor(topk);
  } else if (spec.name == "randomk") {
    options.compressor = MakeRandomKCompressor(spec.density);
  } else {
    TORCH_CHECK(false, "hook must be one of none, allreduce, fp16, bf16, qsgd, onebit, topk, randomk, powersgd, ",
                "ternary, adaptive_powersgd, adaptive_topk, adaptive_qsgd; got '", spec.name, "'");
  }
  options.error_feedback =
      MakeErrorFeedback(spec.error_feedback.empty() ? default_ef : spec.error_feedback, spec.ef_eta);
  options.exchange = ParseExchange(spec.exchange);
  options.min_compress_numel = spec.min_compress_numel;
  options.compress_1d = spec.compress_1d;
  options.seed = spec.seed;
  TORCH_CHECK(spec.name == "topk" || spec.name == "adaptive_topk" || (spec.momentum == 0.0 && spec.clip_norm == 0.0),
              "momentum correction and clip_norm are top-k (DGC) options; hook is '", spec.name, "'");
  options.start_iter = std::max<int64_t>(spec.start_iter, 0);
  options.momentum = spec.momentum;
  options.clip_norm = spec.clip_norm;
  if (adaptive) return MakeAdaptiveHook(std::move(pg), spec, std::move(options));
  return std::make_shared<CompressionHook>(std::move(pg), options);
}

}  // namespace lowbit::comm
