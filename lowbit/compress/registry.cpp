#include "lowbit/compress/registry.h"

#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "lowbit/base/error.h"
#include "lowbit/compress/adaptive_hook.h"
#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/compeft.h"
#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/powersgd_hook.h"
#include "lowbit/compress/sparseloco_hook.h"

namespace lowbit::compress {
namespace {

std::optional<Exchange> ParseExchange(const std::string& name) {
  if (name == "auto") return std::nullopt;
  if (name == "allreduce") return Exchange::kAllReduce;
  if (name == "allgather") return Exchange::kAllGather;
  if (name == "twophase") return Exchange::kTwoPhase;
  LOWBIT_CHECK(false, "exchange must be auto, allreduce, allgather or twophase, got '", name, "'");
}

// "pattern=value,pattern=plain" -> rules, in order.
std::vector<std::shared_ptr<LayerRule>> ParseOverrides(const std::string& text) {
  std::vector<std::shared_ptr<LayerRule>> rules;
  if (text.empty()) return rules;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const size_t eq = item.rfind('=');
    LOWBIT_CHECK(eq != absl::string_view::npos && eq > 0 && eq + 1 < item.size(),
                 "adapt override must be pattern=value or pattern=plain, got '", std::string(item), "'");
    const std::string pattern(item.substr(0, eq));
    const absl::string_view value = item.substr(eq + 1);
    double v = 0;
    if (value == "plain") {
      rules.push_back(NameOverrideRule(pattern, std::nullopt));
    } else {
      LOWBIT_CHECK(absl::SimpleAtod(value, &v), "adapt override for '", pattern, "' must be a number or plain, got '",
                   std::string(value), "'");
      rules.push_back(NameOverrideRule(pattern, v));
    }
  }
  return rules;
}

using Kind = HookSetting::Kind;
constexpr double kBig = 9.0e15;  // integers up to 2^53 stay exact in a double

HookSetting Int(const char* key, int64_t value, double min, double max, const char* help) {
  return {key, Kind::kInt, std::to_string(value), min, max, false, {}, help};
}
HookSetting Real(const char* key, double value, double min, double max, bool min_open, const char* help) {
  std::string text = absl::StrCat(value);
  return {key, Kind::kDouble, text, min, max, min_open, {}, help};
}
HookSetting Bool(const char* key, bool value, const char* help) {
  return {key, Kind::kBool, value ? "true" : "false", 0, 0, false, {}, help};
}
HookSetting Choice(const char* key, const char* value, std::vector<std::string> choices, const char* help) {
  return {key, Kind::kChoice, value, 0, 0, false, std::move(choices), help};
}
HookSetting Text(const char* key, const char* help) { return {key, Kind::kText, "", 0, 0, false, {}, help}; }

// The settings every compressing hook shares; `ef` is its default error feedback.
std::vector<HookSetting> Compression(const char* ef, int64_t min_compress_numel = defaults::kMinCompressNumel) {
  return {
      Choice("error_feedback", ef, {"none", "ef", "ef21", "econtrol"}, "error feedback policy"),
      Real("ef_eta", defaults::kEfEta, 0, 1, true, "EControl's error weight (about the kept fraction or less)"),
      Choice("exchange", "auto", {"auto", "allgather", "twophase", "allreduce"},
             "collective (auto: the compressor's default)"),
      Int("min_compress_numel", min_compress_numel, 0, kBig, "smaller tensors go uncompressed"),
      Bool("compress_1d", false, "also compress 1-D tensors (biases, norms)"),
      Choice("plain", "fp32", {"fp32", "fp16"}, "the tensors sent uncompressed go as fp32 or fp16"),
      Int("start_iter", 0, 0, kBig, "uncompressed steps first"),
      Int("seed", 0, 0, kBig, "seed of stochastic rounding and random selections"),
  };
}

std::vector<HookSetting> Plus(std::vector<HookSetting> a, const std::vector<HookSetting>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

HookSetting Bits() { return Int("bits", defaults::kQsgdBits, 1, 8, "bits per element"); }
HookSetting Block() { return Int("block", defaults::kBlock, 1, 1 << 24, "elements per scale"); }
HookSetting Density(double value) { return Real("density", value, 0, 1, true, "fraction of elements sent"); }
HookSetting Rounding(const char* value) {
  return Choice("rounding", value, {"stochastic", "nearest"}, "stochastic (unbiased) or nearest rounding");
}
std::vector<HookSetting> TopK(int64_t warmup_steps) {
  return {Density(defaults::kDensity),
          Real("momentum", 0, 0, 1, false, "DGC momentum correction (use with plain SGD); 0: off"),
          Real("clip_norm", 0, 0, kBig, false, "DGC local gradient clipping norm; 0: off"),
          Real("sample_ratio", 0, 0, 1, false, "DGC threshold from this fraction of |g|; 0: exact top-k"),
          Int("warmup_steps", warmup_steps, 0, kBig, "DGC density warm-up steps")};
}
std::vector<HookSetting> PowerSgd() {
  return {Int("rank", defaults::kPowerSgdRank, 1, 1 << 20, "rank of the P and Q factors"),
          Int("start_iter", defaults::kPowerSgdStartIter, 0, kBig, "uncompressed steps first"),
          Bool("warm_start", true, "reuse Q across steps"),
          Real("min_compression_rate", defaults::kMinCompressionRate, 0, kBig, true,
               "compress a matrix only if it shrinks this much"),
          Choice("error_feedback", "ef", {"ef", "none"}, "error feedback"),
          Int("seed", 0, 0, kBig, "seed of the initial Q")};
}
std::vector<HookSetting> Adapt() {
  return {Int("adapt_period", defaults::kAdaptPeriod, 1, kBig, "steps between per-layer decisions"),
          Int("adapt_window", defaults::kAdaptWindow, 1, kBig, "steps of gradients per decision (<= adapt_period)"),
          Real("adapt_alpha", defaults::kAdaptAlpha, 0, kBig, true, "error budget, times the uniform setting's error"),
          {"adapt_candidates", Kind::kText, "auto", 0, 0, false, {},
           "comma-separated ranks, densities or bits to choose from (auto: around the default)"},
          Text("adapt_overrides", "per-parameter settings, 'pattern=value,pattern=plain' (fnmatch patterns)")};
}

std::vector<HookInfo> BuildRegistry() {
  const std::vector<HookSetting> layer_rules = {
      Int("min_compress_numel", defaults::kMinCompressNumel, 0, kBig, "smaller tensors go uncompressed"),
      Bool("compress_1d", false, "also compress 1-D tensors (biases, norms)")};
  return {
      {"allreduce", "uncompressed mean allreduce", {}},
      {"none", "the same as allreduce", {}},
      {"fp16", "cast to fp16, allreduce", Compression("none")},
      {"bf16", "cast to bf16, allreduce", Compression("none")},
      {"qsgd", "QSGD: bits-bit codes and a scale per block, allgather",
       Plus(Compression("ef"), {Bits(), Block(), Rounding("stochastic")})},
      {"ternary", "TernGrad {-s, 0, s} per block, allgather", Plus(Compression("ef"), {Block(), Rounding("nearest")})},
      {"onebit", "sign and a scale per block, allgather",
       Plus(Compression("ef"), {Block(), Int("scale_norm", defaults::kOneBitScaleNorm, 1, 2, "2: RMS, 1: mean |g|")})},
      {"topk", "top-k / Deep Gradient Compression, allgather",
       Plus(Compression("ef", defaults::kTopKMinCompressNumel), TopK(defaults::kTopKWarmupSteps))},
      {"compeft", "ComPEFT: top-k, then sign times alpha * std per tensor, allgather",
       Plus(Compression("ef"), {Density(0.05), Real("alpha", 1.0, 0, kBig, true, "the scale is alpha * std")})},
      {"randomk", "random-k with shared indices, allreduce",
       Plus(Compression("ef"), {Density(defaults::kRandomKDensity)})},
      {"powersgd", "PowerSGD rank-r factors, two allreduces", PowerSgd()},
      {"sparseloco",
       "SparseLoCo: decayed error feedback, chunked top-k, a few bits each, allgather",
       {Int("chunk", 4096, 1, 32768, "elements per top-k chunk"), Int("topk", 64, 1, 32768, "entries kept per chunk"),
        Choice("bits", "2", {"1", "2", "4", "8"}, "bits per kept value"),
        Real("decay", 0.95, 0, 1, false, "the error-feedback buffer's decay"),
        Real("range_sigmas", 6.0, 0, kBig, true, "bins span mean +- this many standard deviations")}},
      {"adaptive_powersgd", "L-GreCo: PowerSGD rank per layer", Plus(Plus(PowerSgd(), layer_rules), Adapt())},
      {"adaptive_topk", "L-GreCo: top-k density per layer",
       Plus(Plus(Compression("ef", defaults::kTopKMinCompressNumel), TopK(0)), Adapt())},
      {"adaptive_qsgd", "L-GreCo: QSGD bits per layer",
       Plus(Plus(Compression("ef"), {Bits(), Block(), Rounding("stochastic")}), Adapt())},
  };
}

// A hook's settings after defaults and validation.
class Values {
 public:
  Values(const HookInfo& hook, const HookSettings& given) : hook_(hook) {
    for (const HookSetting& s : hook.settings) text_[s.key] = s.default_value;
    for (const auto& [key, value] : given) {
      const HookSetting* s = hook.Find(key);
      if (s == nullptr) {
        std::vector<std::string> keys;
        for (const HookSetting& k : hook.settings) keys.push_back(k.key);
        LOWBIT_CHECK(false, "hook '", hook.name, "' has no setting '", key, "'",
                     keys.empty() ? std::string(" (it takes none)") : "; its settings: " + absl::StrJoin(keys, ", "));
      }
      Check(*s, value);
      text_[key] = value;
    }
  }
  int64_t Int(const std::string& key) const {
    double v = 0;
    (void)absl::SimpleAtod(text_.at(key), &v);  // checked
    return static_cast<int64_t>(v);
  }
  double Double(const std::string& key) const {
    double v = 0;
    (void)absl::SimpleAtod(text_.at(key), &v);
    return v;
  }
  bool Bool(const std::string& key) const { return text_.at(key) == "true" || text_.at(key) == "1"; }
  const std::string& Text(const std::string& key) const { return text_.at(key); }
  bool Has(const std::string& key) const { return text_.count(key) > 0; }

 private:
  void Check(const HookSetting& s, const std::string& value) const {
    const std::string where = absl::StrCat("hook '", hook_.name, "': setting '", s.key, "'");
    switch (s.kind) {
      case Kind::kInt:
      case Kind::kDouble: {
        double v = 0;
        const bool number = absl::SimpleAtod(value, &v) && std::isfinite(v);
        const bool integral = s.kind == Kind::kDouble || (number && std::floor(v) == v);
        LOWBIT_CHECK(number && integral, where, " must be ", s.kind == Kind::kInt ? "an integer" : "a number",
                     ", got '", value, "'");
        const bool low_ok = s.min_open ? v > s.min : v >= s.min;
        LOWBIT_CHECK(low_ok && v <= s.max, where, " must be in ", s.Range(), ", got ", value);
        break;
      }
      case Kind::kBool:
        LOWBIT_CHECK(value == "true" || value == "false" || value == "1" || value == "0", where,
                     " must be true or false, got '", value, "'");
        break;
      case Kind::kChoice:
        LOWBIT_CHECK(std::find(s.choices.begin(), s.choices.end(), value) != s.choices.end(), where, " must be ",
                     s.Range(), ", got '", value, "'");
        break;
      case Kind::kText:
        break;
    }
  }
  const HookInfo& hook_;
  std::map<std::string, std::string> text_;
};

PowerSgdOptions PowerSgdFrom(const Values& v) {
  PowerSgdOptions options;
  options.rank = static_cast<int>(v.Int("rank"));
  options.start_iter = v.Int("start_iter");
  options.warm_start = v.Bool("warm_start");
  options.min_compression_rate = v.Double("min_compression_rate");
  options.error_feedback = v.Text("error_feedback") != "none";
  options.seed = static_cast<uint64_t>(v.Int("seed"));
  return options;
}

TopKOptions TopKFrom(const Values& v) {
  TopKOptions topk;
  topk.density = v.Double("density");
  topk.sample_ratio = v.Double("sample_ratio");
  topk.warmup_steps = v.Int("warmup_steps");
  return topk;
}

CompressionHookOptions CompressionFrom(const std::string& name, const Values& v) {
  CompressionHookOptions options;
  if (name == "fp16" || name == "bf16") {
    options.compressor = MakeCastCompressor(name == "fp16" ? at::kHalf : at::kBFloat16);
  } else if (name == "qsgd" || name == "adaptive_qsgd") {
    options.compressor = MakeQsgdCompressor(static_cast<int>(v.Int("bits")), v.Int("block"), v.Text("rounding") != "nearest");
  } else if (name == "ternary") {
    options.compressor = MakeTernaryCompressor(v.Int("block"), v.Text("rounding") == "stochastic");
  } else if (name == "onebit") {
    options.compressor = MakeSignCompressor(v.Int("block"), static_cast<int>(v.Int("scale_norm")));
  } else if (name == "topk" || name == "adaptive_topk") {
    options.compressor = MakeTopKCompressor(TopKFrom(v));
    options.momentum = v.Double("momentum");
    options.clip_norm = v.Double("clip_norm");
  } else if (name == "compeft") {
    options.compressor = MakeComPeftCompressor({v.Double("density"), v.Double("alpha")});
  } else {
    options.compressor = MakeRandomKCompressor(v.Double("density"));
  }
  options.error_feedback = MakeErrorFeedback(v.Text("error_feedback"), v.Double("ef_eta"));
  options.exchange = ParseExchange(v.Text("exchange"));
  options.min_compress_numel = v.Int("min_compress_numel");
  options.compress_1d = v.Bool("compress_1d");
  options.plain_fp16 = v.Text("plain") == "fp16";
  options.start_iter = v.Int("start_iter");
  options.seed = static_cast<uint64_t>(v.Int("seed"));
  return options;
}

std::shared_ptr<comm::CommHook> MakeAdaptiveHook(std::shared_ptr<comm::ProcessGroup> pg, const std::string& name,
                                           const Values& v, AdaptCallback on_adapt) {
  AdaptiveOptions o;
  if (name == "adaptive_powersgd") {
    o.family = AdaptiveFamily::kPowerSgd;
    o.default_value = static_cast<double>(v.Int("rank"));
    o.powersgd = PowerSgdFrom(v);
  } else if (name == "adaptive_topk") {
    o.family = AdaptiveFamily::kTopK;
    o.default_value = v.Double("density");
    o.topk = TopKFrom(v);
    o.compression = CompressionFrom(name, v);
  } else {
    o.family = AdaptiveFamily::kQsgd;
    o.default_value = static_cast<double>(v.Int("bits"));
    o.qsgd_block = v.Int("block");
    o.qsgd_stochastic = v.Text("rounding") != "nearest";
    o.compression = CompressionFrom(name, v);
  }
  const std::string& candidates = v.Text("adapt_candidates");
  LOWBIT_CHECK(!candidates.empty(), "hook '", name, "': setting 'adapt_candidates' is empty (use auto, or a ",
               "comma-separated list)");
  if (candidates == "auto") {
    o.candidates = DefaultCandidates(o.family, o.default_value);
  } else {
    for (absl::string_view item : absl::StrSplit(candidates, ',')) {
      double c = 0;
      LOWBIT_CHECK(absl::SimpleAtod(item, &c), "hook '", name, "': setting 'adapt_candidates' must be numbers, got '",
                   candidates, "'");
      o.candidates.push_back(c);
    }
  }
  o.rules = ParseOverrides(v.Text("adapt_overrides"));
  for (auto& rule : DefaultLayerRules(o.family, v.Int("min_compress_numel"), v.Bool("compress_1d"))) {
    o.rules.push_back(rule);
  }
  o.period = v.Int("adapt_period");
  o.window = v.Int("adapt_window");
  o.alpha = v.Double("adapt_alpha");
  o.on_change = std::move(on_adapt);
  return std::make_shared<AdaptiveHook>(std::move(pg), std::move(o));
}

}  // namespace

// Integral values print as integers (1048576, not 1.04858e+06).
std::string Number(double v) {
  if (v >= kBig) return "inf";
  if (std::floor(v) == v && std::fabs(v) < kBig) return std::to_string(static_cast<int64_t>(v));
  return absl::StrCat(v);
}

std::string HookSetting::Range() const {
  switch (kind) {
    case Kind::kInt:
    case Kind::kDouble:
      return absl::StrCat(min_open ? "(" : "[", Number(min), ", ", Number(max), "]");
    case Kind::kBool: return "true or false";
    case Kind::kChoice: return "one of " + absl::StrJoin(choices, ", ");
    case Kind::kText: return "text";
  }
  return "";
}

const HookSetting* HookInfo::Find(const std::string& key) const {
  for (const HookSetting& s : settings) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

const std::vector<HookInfo>& HookRegistry() {
  static const std::vector<HookInfo> registry = BuildRegistry();
  return registry;
}

const HookInfo& FindHook(const std::string& name) {
  std::vector<std::string> names;
  for (const HookInfo& h : HookRegistry()) {
    if (h.name == name) return h;
    names.push_back(h.name);
  }
  LOWBIT_CHECK(false, "unknown comm hook '", name, "'; known: ", absl::StrJoin(names, ", "));
}

std::shared_ptr<comm::CommHook> MakeCommHook(std::shared_ptr<comm::ProcessGroup> pg, const std::string& name,
                                       const HookSettings& settings, AdaptCallback on_adapt) {
  const HookInfo& hook = FindHook(name);
  const Values v(hook, settings);
  if (name == "allreduce" || name == "none") return std::make_shared<comm::AllReduceHook>(std::move(pg));
  if (name == "powersgd") return std::make_shared<PowerSgdHook>(std::move(pg), PowerSgdFrom(v));
  if (name == "sparseloco") {
    LOWBIT_CHECK(v.Int("topk") <= v.Int("chunk"), "comm hook 'sparseloco': topk must be <= chunk (", v.Int("chunk"),
                 "), got ", v.Int("topk"));
    return std::make_shared<SparseLoCoHook>(std::move(pg), SparseLoCoHookOptions()
                                                               .chunk(v.Int("chunk"))
                                                               .topk(v.Int("topk"))
                                                               .bits(std::stoi(v.Text("bits")))
                                                               .decay(v.Double("decay"))
                                                               .range_sigmas(v.Double("range_sigmas")));
  }
  if (name.rfind("adaptive_", 0) == 0) return MakeAdaptiveHook(std::move(pg), name, v, std::move(on_adapt));
  return std::make_shared<CompressionHook>(std::move(pg), CompressionFrom(name, v));
}

std::shared_ptr<comm::CommHook> MakeCommHook(std::shared_ptr<comm::ProcessGroup> pg, const std::string& spec,
                                             AdaptCallback on_adapt) {
  const size_t colon = spec.find(':');
  HookSettings settings;
  if (colon != std::string::npos) {
    for (absl::string_view item : absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
      const size_t eq = item.find('=');
      LOWBIT_CHECK(eq != absl::string_view::npos && eq > 0, "comm hook '", spec, "': settings must be key=value, got '",
                   std::string(item), "'");
      settings.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    }
  }
  return MakeCommHook(std::move(pg), spec.substr(0, colon), settings, std::move(on_adapt));
}

}  // namespace lowbit::compress
