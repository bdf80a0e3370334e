#include "lowbit/qat/prepare.h"

#include <fnmatch.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lowbit/base/error.h"
#include "lowbit/qat/internal/layer_walk.h"
#include "lowbit/qat/internal/prepared_set.h"

namespace lowbit::qat {

namespace {

// OFQ presets: freeze an element once it oscillates on more than 2% of the
// steps (moving average, momentum 0.01; Nagel et al. advise 2-3x the momentum).
constexpr double kOfqFreezeThreshold = 0.02;

QuantizerConfig IntWeight(int bits, Estimator estimator) {
  QuantizerConfig c;
  c.bits = bits;
  c.granularity = Granularity::kPerChannel;
  c.estimator = estimator;
  return c;
}

// 8-bit activations: affine (the network input may be negative), the range
// a moving average of the batches' (constant 0.1: training from scratch
// grows the ranges quickly, and torch's 0.01 lags them by hundreds of steps),
// zero gradient where clipped, as ATen's fake_quantize.
QuantizerConfig Int8Input() {
  QuantizerConfig c;
  c.symmetric = false;
  c.observer = Observer::kMovingAverageMinMax;
  c.averaging_constant = 0.1;
  c.estimator = Estimator::kClippedSte;
  return c;
}

// Activations after ReLU: unsigned, learned step.
QuantizerConfig LsqInput(int bits) {
  QuantizerConfig c;
  c.bits = bits;
  c.is_signed = false;
  c.estimator = Estimator::kLsq;
  return c;
}

QuantizerConfig Quest(int bits) {
  QuantizerConfig c;
  c.bits = bits;
  c.estimator = Estimator::kQuest;
  return c;
}

LayerConfig W8A8() { return {IntWeight(8, Estimator::kSte), Int8Input(), {}}; }

QuantizerConfig MiniFloat(Format f) {
  QuantizerConfig c;
  c.format = f;
  return c;
}

bool IsPlainLayer(torch::nn::Module& m) {
  return dynamic_cast<QuantLayer*>(&m) == nullptr && (dynamic_cast<torch::nn::LinearImpl*>(&m) != nullptr ||
                                                      dynamic_cast<torch::nn::Conv2dImpl*>(&m) != nullptr);
}

struct Found {
  torch::nn::Module* parent;
  std::string key;     // the child's name in parent
  std::string dotted;  // from the root
};

// Every Linear/Conv2d (torch's or lowbit::qat's), depth first in registration
// order; refuses layers that are already quantized.
std::vector<Found> Collect(torch::nn::Module& root) {
  std::vector<Found> out;
  internal::WalkChildren(root, "", [&](torch::nn::Module& parent, const std::string& key, const std::string& dotted,
                                       torch::nn::Module& child) {
    auto* q = dynamic_cast<QuantLayer*>(&child);
    LOWBIT_CHECK(q == nullptr || !q->configured(), "Prepare: layer '", dotted,
                 "' is already quantized (Prepare runs once per model)");
    if (q == nullptr && !IsPlainLayer(child)) return true;
    out.push_back({&parent, key, dotted});
    return false;
  });
  return out;
}

QuantizerConfig StatsQWeight(int bits) {
  QuantizerConfig c = IntWeight(bits, Estimator::kStatsQ);
  c.freeze_threshold = kOfqFreezeThreshold;
  return c;
}

QuantizerConfig DkmWeight(int bits) {
  QuantizerConfig c;
  c.format = Format::kPalette;
  c.estimator = Estimator::kDkm;
  c.bits = bits;
  return c;
}

QuantizerConfig TernaryWeight(bool tequila) {
  QuantizerConfig c;
  c.format = Format::kTernary;
  c.granularity = Granularity::kPerChannel;
  c.observer = Observer::kAbsMean;
  c.dead_zone_bias = tequila;
  return c;
}

}  // namespace

std::vector<std::string> PresetNames() {
  return {"w8a8",       "w4a8",       "w4a4_lsq",    "w2a2_lsq",        "w4a4_quest", "w2a2_quest", "w1a1_quest",
          "w4a4_ofq",   "w2a2_ofq",   "ternary_ste", "ternary_tequila", "w4_lsq",     "w3_lsq",     "w2_lsq",
          "dkm4",       "dkm3",       "dkm2",        "int8_train",      "fp8_train"};
}

QatConfig PresetConfig(const std::string& name) {
  QatConfig c;
  if (name == "w8a8") {
    c.layers = W8A8();
  } else if (name == "w4a8") {
    c.layers = {IntWeight(4, Estimator::kLsq), Int8Input(), {}};
    c.first_last = W8A8();
  } else if (name == "w4a4_lsq" || name == "w2a2_lsq") {
    const int bits = name[1] - '0';
    c.layers = {IntWeight(bits, Estimator::kLsq), LsqInput(bits), {}};
    c.first_last = W8A8();
  } else if (name == "w4a4_ofq" || name == "w2a2_ofq") {
    const int bits = name[1] - '0';
    c.layers = {StatsQWeight(bits), LsqInput(bits), {}};
    c.first_last = W8A8();
  } else if (name == "ternary_ste" || name == "ternary_tequila") {
    c.layers = {TernaryWeight(name == "ternary_tequila"), Int8Input(), {}};
  } else if (name == "w4_lsq" || name == "w3_lsq" || name == "w2_lsq") {
    c.layers = {IntWeight(name[1] - '0', Estimator::kLsq), std::nullopt, {}};
  } else if (name == "dkm4" || name == "dkm3" || name == "dkm2") {
    c.layers = {DkmWeight(name[3] - '0'), std::nullopt, {}};
  } else if (name == "w4a4_quest" || name == "w2a2_quest" || name == "w1a1_quest") {
    const int bits = name[1] - '0';
    c.layers = {Quest(bits), Quest(bits), {}};
    c.first_last = W8A8();
  } else if (name == "int8_train") {
    QuantizerConfig input;  // int8 symmetric, per tensor, the current batch's range
    c.layers = {IntWeight(8, Estimator::kSte), input, {GradientQuant::kInt8}};
  } else if (name == "fp8_train") {
    c.layers = {MiniFloat(Format::kFp8E4M3), MiniFloat(Format::kFp8E4M3), {GradientQuant::kFp8E5M2}};
  } else {
    LOWBIT_CHECK(false, "unknown QAT preset '", name, "'; known: ", absl::StrJoin(PresetNames(), ", "));
  }
  return c;
}

QatConfig PresetConfig(const std::string& name, int64_t total_steps) {
  LOWBIT_CHECK(total_steps >= 0, "PresetConfig: total_steps must be >= 0, got ", total_steps);
  QatConfig c = PresetConfig(name);
  const auto start = static_cast<int64_t>(kOfqFreezeStartFraction * static_cast<double>(total_steps));
  auto set = [&](std::optional<QuantizerConfig>& q) {
    if (q && q->freeze_threshold > 0) q->freeze_start = start;
  };
  set(c.layers.weight);
  if (c.first_last) set(c.first_last->weight);
  return c;
}

std::vector<std::string> Prepare(torch::nn::Module& module, const QatConfig& config) {
  const std::vector<Found> layers = Collect(module);
  auto set = std::make_shared<internal::PreparedSet>();
  std::vector<std::string> replaced;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Found& f = layers[i];
    std::optional<LayerConfig> lc = config.layers;
    if (config.first_last && (i == 0 || i + 1 == layers.size())) lc = config.first_last;
    for (const auto& [pattern, override_config] : config.overrides) {
      if (fnmatch(pattern.c_str(), f.dotted.c_str(), 0) == 0) {
        lc = override_config;
        break;
      }
    }
    if (!lc) continue;
    QuantLayer* layer = nullptr;
    try {
      std::shared_ptr<torch::nn::Module> child = f.parent->named_children()[f.key];
      if (auto* q = dynamic_cast<QuantLayer*>(child.get())) {
        q->Configure(*lc);  // lowbit::qat::Linear/Conv2d: in place
        layer = q;
      } else if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(child)) {
        Linear q(torch::nn::Linear(linear), *lc);
        internal::ReplaceChild(*f.parent, f.key, child, q);
        layer = q.get();
      } else {
        Conv2d q(torch::nn::Conv2d(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(child)), *lc);
        internal::ReplaceChild(*f.parent, f.key, child, q);
        layer = q.get();
      }
    } catch (const c10::Error& e) {
      LOWBIT_CHECK(false, "Prepare: layer '", f.dotted, "': ", e.msg());
    }
    layer->Track(set, f.dotted);
    replaced.push_back(f.dotted);
  }
  return replaced;
}

std::vector<std::string> UnreachedLayers(torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : module.named_modules()) {
    auto* q = dynamic_cast<QuantLayer*>(item.value().get());
    if (q != nullptr && q->configured() && !q->WasCalled()) names.push_back(item.key());
  }
  return names;
}

void Calibrate(torch::nn::Module& module, const std::function<void()>& forward) {
  torch::NoGradGuard no_grad;
  const bool was_training = module.is_training();
  module.train();
  forward();
  module.train(was_training);
  const std::vector<std::string> unreached = UnreachedLayers(module);
  LOWBIT_CHECK(unreached.empty(), "Calibrate: prepared layer(s) ", absl::StrJoin(unreached, ", "),
               " were not called by the calibration forward: the model calls them through typed torch::nn::Linear/"
               "Conv2d members, which Prepare cannot replace, so they would run in fp32. Declare those members as "
               "lowbit::qat::Linear / lowbit::qat::Conv2d (qat/quant_modules.h), or call them through "
               "lowbit::qat::ForwardLayer");
}

double MeanFlipFraction(torch::nn::Module& module) {
  double sum = 0, weight = 0;
  for (const auto& m : module.modules()) {
    const auto* q = dynamic_cast<const QuantLayer*>(m.get());
    if (q == nullptr || q->LastFlipFraction() < 0) continue;
    const double numel = static_cast<double>(q->Weight().numel());
    sum += q->LastFlipFraction() * numel;
    weight += numel;
  }
  return weight > 0 ? sum / weight : -1.0;
}

std::vector<at::Tensor> FreezeLevels(torch::nn::Module& module) {
  std::vector<std::pair<std::string, QuantLayer*>> layers;
  internal::WalkChildren(module, "", [&](torch::nn::Module&, const std::string&, const std::string& dotted,
                                         torch::nn::Module& child) {
    auto* q = dynamic_cast<QuantLayer*>(&child);
    if (q == nullptr || !q->configured()) return true;
    LOWBIT_CHECK(q->weight_quantizer, "FreezeLevels: layer '", dotted, "' has no weight quantizer");
    LOWBIT_CHECK(
        q->weight_quantizer->config().estimator == Estimator::kLsq ||
            q->weight_quantizer->config().estimator == Estimator::kLsqPlus,
        "FreezeLevels: E2E-QP trains the weight quantizer's step size, so it needs lsq or lsq+ weights; layer '",
        dotted, "' has ", ToString(q->weight_quantizer->config()));
    layers.emplace_back(dotted, q);
    return false;
  });
  LOWBIT_CHECK(!layers.empty(), "FreezeLevels: the model has no prepared layers (call Prepare first)");
  for (auto& p : module.parameters()) p.requires_grad_(false);
  std::vector<at::Tensor> trainable;
  for (auto& [dotted, q] : layers) {
    q->weight_quantizer->FreezeLevels(q->Weight());
    for (FakeQuantizer* fq : {&q->weight_quantizer, &q->input_quantizer}) {
      if (!*fq) continue;
      for (auto& p : (*fq)->parameters()) {
        p.requires_grad_(true);
        trainable.push_back(p);
      }
    }
  }
  return trainable;
}

double MeanFrozenFraction(torch::nn::Module& module) {
  double frozen = 0, total = 0;
  internal::WalkChildren(module, "", [&](torch::nn::Module&, const std::string&, const std::string&,
                                         torch::nn::Module& child) {
    auto* q = dynamic_cast<QuantLayer*>(&child);
    if (q == nullptr) return true;
    if (q->weight_quantizer && q->weight_quantizer->FrozenMask().defined()) {
      const double n = static_cast<double>(q->Weight().numel());
      frozen += q->weight_quantizer->FrozenFraction() * n;
      total += n;
    }
    return false;
  });
  return total > 0 ? frozen / total : 0.0;
}

}  // namespace lowbit::qat
