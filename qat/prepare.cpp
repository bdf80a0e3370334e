#include "lowbit/qat/prepare.h"

#include <fnmatch.h>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lowbit::qat {

namespace {

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

bool Quantizable(torch::nn::Module& m) {
  return dynamic_cast<torch::nn::LinearImpl*>(&m) != nullptr || dynamic_cast<torch::nn::Conv2dImpl*>(&m) != nullptr;
}

// (parent, child name, dotted name) of every Linear/Conv2d, depth first in
// registration order; refuses layers that are already quantized.
void Collect(torch::nn::Module& parent, const std::string& prefix,
             std::vector<std::tuple<torch::nn::Module*, std::string, std::string>>& out) {
  for (const auto& item : parent.named_children()) {
    const std::string dotted = prefix.empty() ? item.key() : absl::StrCat(prefix, ".", item.key());
    TORCH_CHECK(dynamic_cast<QuantLayer*>(item.value().get()) == nullptr, "Prepare: layer '", dotted,
                "' is already quantized (Prepare runs once per model)");
    if (Quantizable(*item.value())) {
      out.emplace_back(&parent, item.key(), dotted);
    } else {
      Collect(*item.value(), dotted, out);
    }
  }
}

}  // namespace

std::vector<std::string> PresetNames() {
  return {"w8a8", "w4a8", "w4a4_lsq", "w4a4_quest", "w2a2_quest", "w1a1_quest", "int8_train", "fp8_train"};
}

QatConfig PresetConfig(const std::string& name) {
  QatConfig c;
  if (name == "w8a8") {
    c.layers = W8A8();
  } else if (name == "w4a8") {
    c.layers = {IntWeight(4, Estimator::kLsq), Int8Input(), {}};
    c.first_last = W8A8();
  } else if (name == "w4a4_lsq") {
    c.layers = {IntWeight(4, Estimator::kLsq), LsqInput(4), {}};
    c.first_last = W8A8();
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
    TORCH_CHECK(false, "unknown QAT preset '", name, "'; known: ", absl::StrJoin(PresetNames(), ", "));
  }
  return c;
}

std::vector<std::string> Prepare(torch::nn::Module& module, const QatConfig& config) {
  std::vector<std::tuple<torch::nn::Module*, std::string, std::string>> layers;
  Collect(module, "", layers);
  std::vector<std::string> replaced;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& [parent, name, dotted] = layers[i];
    std::optional<LayerConfig> lc = config.layers;
    if (config.first_last && (i == 0 || i + 1 == layers.size())) lc = config.first_last;
    for (const auto& [pattern, override_config] : config.overrides) {
      if (fnmatch(pattern.c_str(), dotted.c_str(), 0) == 0) {
        lc = override_config;
        break;
      }
    }
    if (!lc) continue;
    try {
      std::shared_ptr<torch::nn::Module> child = parent->named_children()[name];
      if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(child)) {
        parent->replace_module(name, QuantLinear(torch::nn::Linear(linear), *lc));
      } else {
        auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(child);
        parent->replace_module(name, QuantConv2d(torch::nn::Conv2d(conv), *lc));
      }
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "Prepare: layer '", dotted, "': ", e.msg());
    }
    replaced.push_back(dotted);
  }
  return replaced;
}

double MeanFlipFraction(torch::nn::Module& module) {
  double sum = 0, weight = 0;
  for (const auto& m : module.modules()) {
    const auto* q = dynamic_cast<const QuantLayer*>(m.get());
    if (q == nullptr || q->LastFlipFraction() < 0) continue;
    const auto* lin = dynamic_cast<const QuantLinearImpl*>(q);
    const auto* conv = dynamic_cast<const QuantConv2dImpl*>(q);
    const double numel = static_cast<double>(lin ? lin->weight.numel() : conv ? conv->weight.numel() : 1);
    sum += q->LastFlipFraction() * numel;
    weight += numel;
  }
  return weight > 0 ? sum / weight : -1.0;
}

}  // namespace lowbit::qat
