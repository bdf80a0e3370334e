// Prepare: quantizes a model's Linear and Conv2d layers (qat/quant_modules.h):
// lowbit::qat::Linear/Conv2d members are configured in place; torch's are
// replaced by them, inside Sequential, ModuleList and ModuleDict too. A layer
// the model still calls through a typed torch::nn member cannot be reached:
// Calibrate, or the first backward, throws naming it (Note [Unreached layers]). Parameters keep their identity
// and names, so an optimizer built before still updates them and checkpoints
// keep their keys (the quantizers add theirs, e.g. "fc1.weight_quantizer.scale").
// New learned tensors (LSQ step sizes, PACT alphas) are parameters of the
// model: build the optimizer (and DistributedDataParallel) after Prepare to
// include them.
//
//   lowbit::qat::QatConfig config = lowbit::qat::PresetConfig("w4a4_lsq");
//   config.overrides.push_back({"head.*", std::nullopt});  // leave fp32
//   lowbit::qat::Prepare(*model, config);
//   // Same batch on every rank: initial LSQ steps, PACT alphas, observers.
//   lowbit::qat::Calibrate(*model, [&] { model->forward(calibration_batch); });
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "lowbit/qat/quant_modules.h"

namespace lowbit::qat {

struct QatConfig {
  // Every Linear and Conv2d.
  LayerConfig layers;
  // If set, the first and the last of those layers (registration order) use
  // this instead; low-bit presets keep them at 8 bits, as is usual.
  std::optional<LayerConfig> first_last;
  // fnmatch patterns over dotted layer names, first match wins, applied last;
  // std::nullopt leaves the layer as it is.
  std::vector<std::pair<std::string, std::optional<LayerConfig>>> overrides;
};

// w8a8, w4a8, w4a4_lsq, w4a4_quest, w2a2_quest, w1a1_quest, int8_train,
// fp8_train (README, QAT section, says what each quantizes how).
QatConfig PresetConfig(const std::string& name);
// The same for a run of `total_steps` optimizer steps: the OFQ presets then
// start freezing oscillating weights halfway (kOfqFreezeStartFraction).
QatConfig PresetConfig(const std::string& name, int64_t total_steps);
inline constexpr double kOfqFreezeStartFraction = 0.5;
std::vector<std::string> PresetNames();

// Replaces the layers; returns their dotted names. Throws if a layer is
// already quantized or a config is invalid (naming the layer).
std::vector<std::string> Prepare(torch::nn::Module& module, const QatConfig& config);

// Dotted names of prepared layers whose forward has not run since Prepare.
std::vector<std::string> UnreachedLayers(torch::nn::Module& module);

// Runs `forward` (the calibration forward: same batch on every rank) in
// training mode without gradients, then throws, naming them, if some prepared
// layers were not called.
void Calibrate(torch::nn::Module& module, const std::function<void()>& forward);

// Weight-count-weighted mean of the layers' LastFlipFraction (-1: none tracked).
double MeanFlipFraction(torch::nn::Module& module);
// Fraction of the weights that oscillation freezing has frozen (0 without it).
double MeanFrozenFraction(torch::nn::Module& module);

// EfficientQAT's E2E-QP (Chen et al. 2024, Sec. 3.3): fixes every prepared
// layer's integer weight levels (FakeQuantizer::FreezeLevels), stops the
// gradient of every parameter of `module`, and returns the quantizers'
// learned steps and offsets, the only tensors left to train. After Prepare
// (LSQ or LSQ+ weights) and Calibrate; build the optimizer on what it returns
// and DistributedDataParallel after it.
//
//   lowbit::qat::Prepare(*model, lowbit::qat::PresetConfig("w2_lsq"));
//   lowbit::qat::Calibrate(*model, [&] { model->forward(batch); });
//   torch::optim::AdamW opt(lowbit::qat::FreezeLevels(*model), 1e-3);
std::vector<at::Tensor> FreezeLevels(torch::nn::Module& module);

}  // namespace lowbit::qat
