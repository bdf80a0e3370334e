#include "lowbit/compress/adaptive_hook.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <c10/util/Logging.h>
#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "lowbit/base/error.h"
#include "lowbit/compress/lgreco.h"
#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::compress {

std::string ToString(AdaptiveFamily family) {
  switch (family) {
    case AdaptiveFamily::kPowerSgd:
      return "powersgd";
    case AdaptiveFamily::kTopK:
      return "topk";
    case AdaptiveFamily::kQsgd:
      return "qsgd";
  }
  return "?";
}

namespace {

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string FormatValue(std::optional<double> value) { return value ? absl::StrCat(*value) : "plain"; }

class NameOverride final : public LayerRule {
 public:
  NameOverride(std::string pattern, std::optional<double> value) : pattern_(std::move(pattern)), value_(value) {
    LOWBIT_CHECK(!pattern_.empty(), "layer override: the name pattern is empty");
  }
  bool Enabled(const std::string& name, const std::vector<int64_t>&) const override {
    return fnmatch(pattern_.c_str(), name.c_str(), 0) == 0;
  }
  LayerHandling Handling() const override {
    LayerHandling h;
    h.kind = value_ ? LayerHandling::Kind::kFixed : LayerHandling::Kind::kPlain;
    h.value = value_.value_or(0.0);
    return h;
  }
  std::string Describe() const override { return absl::StrCat("name(", pattern_, "=", FormatValue(value_), ")"); }

 private:
  std::string pattern_;
  std::optional<double> value_;
};

class SkipSmall final : public LayerRule {
 public:
  SkipSmall(int64_t min_numel, bool compress_1d) : min_numel_(min_numel), compress_1d_(compress_1d) {
    LOWBIT_CHECK(min_numel >= 0, "skip rule: min_compress_numel must be >= 0, got ", min_numel);
  }
  bool Enabled(const std::string&, const std::vector<int64_t>& shape) const override {
    const int64_t n = Numel(shape);
    return n == 0 || n < min_numel_ || (shape.size() < 2 && !compress_1d_);
  }
  LayerHandling Handling() const override { return {LayerHandling::Kind::kPlain, 0.0}; }
  std::string Describe() const override { return absl::StrCat("skip_small(", min_numel_, ",1d=", compress_1d_, ")"); }

 private:
  int64_t min_numel_;
  bool compress_1d_;
};

class Adaptive final : public LayerRule {
 public:
  bool Enabled(const std::string&, const std::vector<int64_t>&) const override { return true; }
  LayerHandling Handling() const override { return {LayerHandling::Kind::kAdaptive, 0.0}; }
  std::string Describe() const override { return "adaptive"; }
};

void CheckValue(AdaptiveFamily family, double v, const char* what) {
  switch (family) {
    case AdaptiveFamily::kTopK:
      LOWBIT_CHECK(v > 0.0 && v <= 1.0, "adaptive_topk: ", what, " density must be in (0, 1], got ", v);
      break;
    case AdaptiveFamily::kQsgd:
      LOWBIT_CHECK(v >= 1.0 && v <= 8.0 && v == std::floor(v), "adaptive_qsgd: ", what,
                   " bits must be an integer in [1, 8], got ", v);
      break;
    case AdaptiveFamily::kPowerSgd:
      LOWBIT_CHECK(v >= 1.0 && v <= 1e6 && v == std::floor(v), "adaptive_powersgd: ", what,
                   " rank must be an integer >= 1, got ", v);
      break;
  }
}

}  // namespace

std::shared_ptr<LayerRule> NameOverrideRule(std::string pattern, std::optional<double> value) {
  return std::make_shared<NameOverride>(std::move(pattern), value);
}
std::shared_ptr<LayerRule> SkipSmallRule(int64_t min_compress_numel, bool compress_1d) {
  return std::make_shared<SkipSmall>(min_compress_numel, compress_1d);
}
std::shared_ptr<LayerRule> AdaptiveRule() { return std::make_shared<Adaptive>(); }

std::vector<std::shared_ptr<LayerRule>> DefaultLayerRules(AdaptiveFamily family, int64_t min_compress_numel,
                                                          bool compress_1d) {
  return {SkipSmallRule(min_compress_numel, compress_1d && family != AdaptiveFamily::kPowerSgd), AdaptiveRule()};
}

std::vector<double> DefaultCandidates(AdaptiveFamily family, double d) {
  CheckValue(family, d, "default");
  std::vector<double> out;
  switch (family) {
    case AdaptiveFamily::kTopK:
      for (double f : {0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0}) out.push_back(std::min(1.0, d * f));
      break;
    case AdaptiveFamily::kQsgd:
      for (double b = std::max(2.0, d - 2); b <= std::min(8.0, d + 2); b += 1) out.push_back(b);
      break;
    case AdaptiveFamily::kPowerSgd:
      for (double f : {0.25, 0.5, 1.0, 2.0, 4.0}) out.push_back(std::max(1.0, std::floor(d * f)));
      break;
  }
  out.push_back(d);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// What the DP needs of a family, and how a choice reaches its hook.
class AdaptiveHook::Family {
 public:
  virtual ~Family() = default;
  virtual comm::CommHook& Hook() = 0;
  virtual const comm::CommHook& Hook() const = 0;
  // Bytes this rank sends for a tensor of `shape` at `value`, as the hook
  // sends it.
  virtual int64_t Bytes(const std::vector<int64_t>& shape, double value) const = 0;
  // ||g - D(C_v(g))|| for each v of `values`, g shaped `shape`.
  virtual std::vector<double> Errors(const at::Tensor& g, const std::vector<int64_t>& shape,
                                     const std::vector<double>& values, uint64_t key) const = 0;
  // The hook uses `value` for `name` from its next bucket; empty: uncompressed.
  virtual void Assign(const std::string& name, std::optional<double> value) = 0;
};

namespace {

// Top-k and QSGD: a CompressionHook with one compressor per layer.
class CompressorFamily : public AdaptiveHook::Family {
 public:
  CompressorFamily(std::shared_ptr<comm::ProcessGroup> pg, CompressionHookOptions options)
      : hook_(std::move(pg), std::move(options)) {
    LOWBIT_CHECK(hook_.exchange() != Exchange::kTwoPhase,
                 "adaptive hooks need the allgather exchange (per-layer messages), got twophase");
  }
  comm::CommHook& Hook() override { return hook_; }
  const comm::CommHook& Hook() const override { return hook_; }
  void Assign(const std::string& name, std::optional<double> value) override {
    hook_.SetLayerCompressor(name, value ? Make(*value) : nullptr);
  }

 protected:
  virtual std::shared_ptr<Compressor> Make(double value) const = 0;

 private:
  CompressionHook hook_;
};

class TopKFamily final : public CompressorFamily {
 public:
  TopKFamily(std::shared_ptr<comm::ProcessGroup> pg, CompressionHookOptions options, TopKOptions topk)
      : CompressorFamily(std::move(pg), std::move(options)), topk_(topk) {}
  int64_t Bytes(const std::vector<int64_t>& shape, double d) const override {
    return 8 * Keep(Numel(shape), d) + 8;  // int32 index + float value each, and the length header
  }
  std::vector<double> Errors(const at::Tensor& g, const std::vector<int64_t>&, const std::vector<double>& values,
                             uint64_t) const override {
    // What top-k drops: the total of g^2 less its k largest squares.
    const at::Tensor sq = std::get<0>(g.reshape({-1}).to(at::kDouble).square().sort(0, /*descending=*/true));
    const at::Tensor kept = sq.cumsum(0);
    const int64_t n = sq.numel();
    const double total = n > 0 ? kept[n - 1].item<double>() : 0.0;
    std::vector<double> out;
    for (double d : values) {
      const int64_t k = Keep(n, d);
      out.push_back(std::sqrt(std::max(0.0, total - (k > 0 ? kept[k - 1].item<double>() : 0.0))));
    }
    return out;
  }

 private:
  static int64_t Keep(int64_t n, double d) {
    return std::min<int64_t>(n, std::max<int64_t>(1, static_cast<int64_t>(std::ceil(d * static_cast<double>(n)))));
  }
  std::shared_ptr<Compressor> Make(double d) const override {
    TopKOptions o = topk_;
    o.density = d;
    return MakeTopKCompressor(o);
  }
  TopKOptions topk_;
};

class QsgdFamily final : public CompressorFamily {
 public:
  QsgdFamily(std::shared_ptr<comm::ProcessGroup> pg, CompressionHookOptions options, int64_t block, bool stochastic)
      : CompressorFamily(std::move(pg), std::move(options)), block_(block), stochastic_(stochastic) {}
  int64_t Bytes(const std::vector<int64_t>& shape, double bits) const override {
    return Make(bits)->FixedMessageBytes(Numel(shape)) + 8;
  }
  std::vector<double> Errors(const at::Tensor& g, const std::vector<int64_t>&, const std::vector<double>& values,
                             uint64_t key) const override {
    const at::Tensor x = g.reshape({-1}).to(at::kFloat).contiguous();
    EncodeContext ctx;
    ctx.key = key;
    ctx.shared_key = key;
    std::vector<double> out;
    for (double bits : values) {
      auto c = Make(bits);
      at::Tensor y = at::empty_like(x);
      c->Decode(c->Encode(x, ctx), ctx, y, /*accumulate=*/false);
      out.push_back((x.to(at::kDouble) - y.to(at::kDouble)).norm().item<double>());
    }
    return out;
  }

 private:
  std::shared_ptr<Compressor> Make(double bits) const override {
    return MakeQsgdCompressor(static_cast<int>(bits), block_, stochastic_);
  }
  int64_t block_;
  bool stochastic_;
};

class PowerSgdFamily final : public AdaptiveHook::Family {
 public:
  PowerSgdFamily(std::shared_ptr<comm::ProcessGroup> pg, PowerSgdOptions options)
      : rate_(options.min_compression_rate), hook_(std::move(pg), options) {}
  // Sizes and errors follow the hook's own rule for which rank a shape gets.
  comm::CommHook& Hook() override { return hook_; }
  const comm::CommHook& Hook() const override { return hook_; }
  int64_t Bytes(const std::vector<int64_t>& shape, double r) const override {
    const int64_t numel = Numel(shape);
    const int64_t rank = Rank(shape, r);
    return rank > 0 ? (shape[0] + numel / shape[0]) * rank * 4 : numel * 4;
  }
  // The best rank-r error, sqrt(sum_{i >= r} s_i^2) over g's singular values.
  std::vector<double> Errors(const at::Tensor& g, const std::vector<int64_t>& shape, const std::vector<double>& values,
                             uint64_t) const override {
    std::vector<double> out(values.size(), 0.0);
    if (shape.size() < 2 || Numel(shape) == 0) return out;
    const at::Tensor s = at::linalg_svdvals(g.reshape({shape[0], -1}).to(at::kDouble)).square();
    const at::Tensor tail = s.flip({0}).cumsum(0).flip({0});  // tail[i] = sum_{j >= i} s_j^2
    for (size_t c = 0; c < values.size(); ++c) {
      const int64_t rank = Rank(shape, values[c]);
      if (rank > 0 && rank < s.numel()) out[c] = std::sqrt(std::max(0.0, tail[rank].item<double>()));
    }
    return out;
  }
  void Assign(const std::string& name, std::optional<double> value) override {
    hook_.SetLayerRank(name, value ? static_cast<int>(*value) : 0);
  }

 private:
  int64_t Rank(const std::vector<int64_t>& shape, double r) const {
    return PowerSgdRank(shape, static_cast<int64_t>(r), rate_);
  }
  double rate_;
  PowerSgdHook hook_;
};

}  // namespace

AdaptiveHook::AdaptiveHook(std::shared_ptr<comm::ProcessGroup> pg, AdaptiveOptions options)
    : pg_(std::move(pg)), options_(std::move(options)) {
  LOWBIT_CHECK(pg_ != nullptr, "AdaptiveHook: process group is null");
  const std::string who = "adaptive_" + ToString(options_.family);
  LOWBIT_CHECK(!options_.candidates.empty(), who, ": the candidate set is empty");
  CheckValue(options_.family, options_.default_value, "default");
  for (double v : options_.candidates) CheckValue(options_.family, v, "candidate");
  LOWBIT_CHECK(options_.period >= 1, who, ": adapt period must be >= 1 step, got ", options_.period);
  LOWBIT_CHECK(options_.window >= 1 && options_.window <= options_.period, who,
               ": adapt window must be in [1, period=", options_.period, "], got ", options_.window);
  LOWBIT_CHECK(std::isfinite(options_.alpha) && options_.alpha > 0.0, who, ": adapt alpha must be > 0, got ",
               options_.alpha);
  LOWBIT_CHECK(options_.bins >= 1 && options_.bins <= 1000000, who, ": bins must be in [1, 1e6], got ", options_.bins);
  auto& c = options_.candidates;
  c.push_back(options_.default_value);
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  if (options_.rules.empty()) options_.rules = DefaultLayerRules(options_.family, 1024, false);
  for (const auto& rule : options_.rules) LOWBIT_CHECK(rule != nullptr, who, ": a layer rule is null");
  switch (options_.family) {
    case AdaptiveFamily::kTopK: {
      TopKOptions topk = options_.topk;
      topk.density = options_.default_value;
      options_.compression.compressor = MakeTopKCompressor(topk);
      family_ = std::make_unique<TopKFamily>(pg_, options_.compression, topk);
      break;
    }
    case AdaptiveFamily::kQsgd:
      options_.compression.compressor = MakeQsgdCompressor(static_cast<int>(options_.default_value),
                                                           options_.qsgd_block, options_.qsgd_stochastic);
      family_ = std::make_unique<QsgdFamily>(pg_, options_.compression, options_.qsgd_block, options_.qsgd_stochastic);
      break;
    case AdaptiveFamily::kPowerSgd:
      options_.powersgd.rank = static_cast<int>(options_.default_value);
      family_ = std::make_unique<PowerSgdFamily>(pg_, options_.powersgd);
      break;
  }
}

AdaptiveHook::~AdaptiveHook() = default;

std::string AdaptiveHook::Name() const { return "adaptive_" + ToString(options_.family); }

std::string AdaptiveHook::Config() const {
  std::vector<std::string> rules;
  for (const auto& rule : options_.rules) rules.push_back(rule->Describe());
  return absl::StrCat(Name(), "(default=", options_.default_value, ",candidates=[",
                      absl::StrJoin(options_.candidates, " "), "],period=", options_.period,
                      ",window=", options_.window, ",alpha=", options_.alpha, ",bins=", options_.bins, ",rules=[",
                      absl::StrJoin(rules, " "), "],inner=", family_->Hook().Config(), ")");
}

std::string AdaptiveHook::ChoicesString() const {
  std::vector<std::string> parts;
  for (const auto& [name, layer] : layers_) parts.push_back(absl::StrCat(name, "=", FormatValue(layer.value)));
  return absl::StrJoin(parts, ";");
}

void AdaptiveHook::Apply(const std::string& name, Layer& layer, std::optional<double> value) {
  layer.value = value;
  layer.bytes = value ? family_->Bytes(layer.shape, *value) : Numel(layer.shape) * 4;
  family_->Assign(name, value);
}

void AdaptiveHook::Learn(const comm::GradBucket& bucket) {
  for (size_t i = 0; i < bucket.gradients.size(); ++i) {
    const std::string& name = bucket.parameter_names[i];
    if (layers_.count(name) == 0) LearnLayer(name, bucket.gradients[i].sizes().vec());
  }
}

void AdaptiveHook::LearnLayer(const std::string& name, std::vector<int64_t> shape) {
  Layer layer;
  layer.shape = std::move(shape);
  layer.handling = {LayerHandling::Kind::kPlain, 0.0};
  for (const auto& rule : options_.rules) {
    if (rule->Enabled(name, layer.shape)) {
      layer.handling = rule->Handling();
      break;
    }
  }
  std::optional<double> value;
  if (layer.handling.kind == LayerHandling::Kind::kFixed) {
    CheckValue(options_.family, layer.handling.value, ("override for '" + name + "':").c_str());
    value = layer.handling.value;
  } else if (layer.handling.kind == LayerHandling::Kind::kAdaptive) {
    auto restored = restored_.find(name);
    value = restored != restored_.end() ? restored->second : std::optional<double>(options_.default_value);
  }
  Apply(name, layers_.emplace(name, std::move(layer)).first->second, value);
}

bool AdaptiveHook::InWindow(int64_t step) const {
  const int64_t phase = step % options_.period;
  return phase == 0 || phase > options_.period - options_.window;
}

void AdaptiveHook::Accumulate(const comm::GradBucket& bucket) {
  if (!at::isfinite(bucket.buffer).all().item<bool>()) return;  // that step is skipped; so is its measurement
  for (size_t i = 0; i < bucket.gradients.size(); ++i) {
    const std::string& name = bucket.parameter_names[i];
    if (layers_.at(name).handling.kind != LayerHandling::Kind::kAdaptive) continue;
    at::Tensor g = bucket.gradients[i].detach().to(at::kFloat);
    at::Tensor& sum = sums_[name];
    if (sum.defined()) {
      sum.add_(g);
    } else {
      sum = g.clone();
    }
  }
}

void AdaptiveHook::Decide() {
  std::vector<std::string> names;
  for (const auto& [name, layer] : layers_) {
    if (layer.handling.kind == LayerHandling::Kind::kAdaptive) names.push_back(name);
  }
  std::map<std::string, at::Tensor> sums;
  sums.swap(sums_);
  if (names.empty()) return;
  const std::vector<double>& values = options_.candidates;
  const int64_t L = static_cast<int64_t>(names.size()), C = static_cast<int64_t>(values.size());
  const uint64_t seed = options_.family == AdaptiveFamily::kPowerSgd ? options_.powersgd.seed
                                                                        : options_.compression.seed;
  at::Tensor local = at::zeros({L * C}, at::kDouble);
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = layers_.at(names[l]);
    auto it = sums.find(names[l]);
    const at::Tensor g = it != sums.end() ? it->second : at::zeros(layer.shape, at::kFloat);
    const uint64_t key = kernels::MixKey(kernels::MixKey(kernels::MixKey(seed, NameKey(names[l])),
                                                         static_cast<uint64_t>(step_)),
                                         static_cast<uint64_t>(pg_->Rank()) + 1);
    const std::vector<double> errors = family_->Errors(g.cpu(), layer.shape, values, key);
    for (int64_t c = 0; c < C; ++c) local[l * C + c] = errors[c];
  }
  const int world = pg_->Size();
  at::Tensor all = at::empty({world * L * C}, at::kDouble);
  pg_->AllGather(all, local)->Wait();
  // Averaged in rank order, so every rank holds the same numbers.
  const double* a = all.data_ptr<double>();
  const int64_t c0 = std::find(values.begin(), values.end(), options_.default_value) - values.begin();
  LayerChoiceProblem problem;
  problem.bins = options_.bins;
  problem.errors.assign(L, std::vector<double>(C, 0.0));
  problem.bytes.assign(L, std::vector<int64_t>(C, 0));
  double uniform_error = 0.0;
  int64_t uniform_bytes = 0;
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t c = 0; c < C; ++c) {
      double e = 0.0;
      for (int r = 0; r < world; ++r) e += a[(r * L + l) * C + c];
      problem.errors[l][c] = e / world;
      problem.bytes[l][c] = family_->Bytes(layers_.at(names[l]).shape, values[c]);
    }
    uniform_error += problem.errors[l][c0];
    uniform_bytes += problem.bytes[l][c0];
  }
  problem.budget = options_.alpha * uniform_error;
  // All-zero gradients or a non-finite sum give no information: keep the choices.
  if (!(problem.budget > 0.0) || !std::isfinite(problem.budget)) return;
  std::vector<int> choice(L, static_cast<int>(c0));
  const std::optional<LayerChoice> best = SolveLayerChoices(problem);
  // The uniform default fits the real budget when alpha >= 1 even where the
  // rounded-up bins exclude it: never do worse than it then.
  if (best && !(uniform_error <= problem.budget && uniform_bytes <= best->bytes)) choice = best->choice;
  ++decisions_;
  std::vector<std::string> changes;
  for (int64_t l = 0; l < L; ++l) {
    Layer& layer = layers_.at(names[l]);
    const double v = values[choice[l]];
    layer.error = problem.errors[l][choice[l]];
    if (layer.value == v) continue;
    changes.push_back(absl::StrCat(names[l], " ", FormatValue(layer.value), " -> ", v));
    Apply(names[l], layer, v);
  }
  if (!changes.empty() && options_.on_change) options_.on_change(step_, absl::StrJoin(changes, ", "));
}

void AdaptiveHook::CheckSameChoices() {
  // The layers seen so far and those restored but not yet seen.
  std::map<std::string, std::optional<double>> values = restored_;
  for (const auto& [name, layer] : layers_) values[name] = layer.value;
  std::string mine = absl::StrCat(step_);
  for (const auto& [name, value] : values) absl::StrAppend(&mine, ";", name, "=", FormatValue(value));
  at::Tensor hash = at::tensor(static_cast<int64_t>(NameKey(mine)), at::kLong).reshape({1});
  at::Tensor all = at::empty({pg_->Size()}, at::kLong);
  pg_->AllGather(all, hash)->Wait();
  for (int r = 0; r < pg_->Size(); ++r) {
    LOWBIT_CHECK(all[r].item<int64_t>() == all[0].item<int64_t>(), Name(), ": rank ", r,
                 " restored other per-layer choices (or step) than rank 0; this rank has step ", mine,
                 " (were the ranks restored from different checkpoints?)");
  }
}

std::shared_ptr<comm::Work> AdaptiveHook::RunHook(comm::GradBucket& bucket) {
  if (bucket.index == 0) {
    ++step_;
    if (check_after_load_) {
      check_after_load_ = false;
      CheckSameChoices();
    }
    if (step_ > options_.period && (step_ - 1) % options_.period == 0) Decide();
  }
  Learn(bucket);
  if (InWindow(step_)) Accumulate(bucket);
  return family_->Hook().RunHook(bucket);
}

void AdaptiveHook::SetOverlap(bool on) { family_->Hook().SetOverlap(on); }

comm::HookState AdaptiveHook::StateDict() const {
  comm::HookState out = family_->Hook().StateDict();
  out.emplace_back("lgreco/step", at::tensor(step_));
  out.emplace_back("lgreco/decisions", at::tensor(decisions_));
  for (const auto& [name, layer] : layers_) {
    if (layer.handling.kind != LayerHandling::Kind::kAdaptive) continue;
    out.emplace_back("lgreco/value/" + name,
                     at::tensor(layer.value.value_or(std::numeric_limits<double>::quiet_NaN()), at::kDouble));
  }
  for (const auto& [name, value] : restored_) {  // restored, not seen again yet
    if (layers_.count(name) != 0) continue;
    out.emplace_back("lgreco/value/" + name,
                     at::tensor(value.value_or(std::numeric_limits<double>::quiet_NaN()), at::kDouble));
  }
  for (const auto& [name, sum] : sums_) out.emplace_back("lgreco/sum/" + name, sum.clone());
  // The shapes of the parameters seen, so that a restored hook knows every layer
  // before its first bucket (a decision due on the first step after a restore).
  for (const auto& [name, layer] : layers_)
    out.emplace_back("lgreco/shape/" + name, at::tensor(layer.shape, at::kLong));
  return out;
}

void AdaptiveHook::LoadStateDict(const comm::HookState& state) {
  comm::HookState inner;
  std::optional<int64_t> saved_world;
  for (const auto& entry : state) {
    if (entry.first.rfind("lgreco/", 0) != 0) inner.push_back(entry);
    if (entry.first == "meta/world_size") saved_world = entry.second.item<int64_t>();
  }
  family_->Hook().LoadStateDict(inner);  // checks the meta entries; warns on another world size
  if (saved_world != static_cast<int64_t>(pg_->Size())) return;
  std::optional<int64_t> step, decisions;
  std::map<std::string, std::optional<double>> values;
  std::map<std::string, at::Tensor> sums;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : state) {
    if (name == "lgreco/step") {
      step = tensor.item<int64_t>();
    } else if (name == "lgreco/decisions") {
      decisions = tensor.item<int64_t>();
    } else if (name.rfind("lgreco/value/", 0) == 0) {
      const double v = tensor.item<double>();
      values[name.substr(13)] = std::isnan(v) ? std::nullopt : std::optional<double>(v);
    } else if (name.rfind("lgreco/sum/", 0) == 0) {
      sums[name.substr(11)] = tensor.clone();
    } else if (name.rfind("lgreco/shape/", 0) == 0) {
      LOWBIT_CHECK(tensor.scalar_type() == at::kLong && tensor.dim() == 1 && tensor.numel() <= 16 &&
                       (tensor.numel() == 0 || tensor.min().item<int64_t>() >= 0),
                   Name(), " hook state: entry '", name, "' must be a 1-D int64 shape of at most 16 sizes >= 0, got ",
                   tensor.scalar_type(), " ", tensor.sizes());
      const at::Tensor c = tensor.contiguous();
      shapes[name.substr(13)] = std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    } else if (name.rfind("lgreco/", 0) == 0) {
      LOWBIT_CHECK(false, Name(), " hook state: unknown entry '", name, "'");
    }
  }
  LOWBIT_CHECK(step.has_value() && decisions.has_value(), Name(),
               " hook state: missing lgreco/step or lgreco/decisions");
  for (const auto& [name, v] : values) {
    if (v) CheckValue(options_.family, *v, ("restored value of '" + name + "':").c_str());
  }
  step_ = *step;
  decisions_ = *decisions;
  sums_ = std::move(sums);
  restored_ = values;
  for (const auto& [name, shape] : shapes) {
    auto known = layers_.find(name);
    if (known == layers_.end()) {
      LearnLayer(name, shape);
    } else {
      LOWBIT_CHECK(known->second.shape == shape, Name(), " hook state: parameter '", name, "' was saved with shape ",
                   at::IntArrayRef(shape), ", this model's is ", at::IntArrayRef(known->second.shape));
    }
  }
  for (const auto& [name, sum] : sums_) {
    auto known = layers_.find(name);
    LOWBIT_CHECK(known == layers_.end() || sum.sizes() == at::IntArrayRef(known->second.shape), Name(),
                 " hook state: the error sum of '", name, "' has shape ", sum.sizes(), ", the parameter ",
                 at::IntArrayRef(known == layers_.end() ? std::vector<int64_t>{} : known->second.shape));
  }
  for (auto& [name, layer] : layers_) {
    auto it = values.find(name);
    if (layer.handling.kind == LayerHandling::Kind::kAdaptive && it != values.end()) Apply(name, layer, it->second);
  }
  check_after_load_ = true;
}

}  // namespace lowbit::compress
