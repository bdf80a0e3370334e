// QuantLinear and QuantConv2d: Linear and Conv2d with fake-quantized weight
// and input, and optionally a low-bit output gradient (low-bit training:
// forward on int8/fp8 operands, backward from a stochastically rounded
// int8/fp8 output gradient, emulated on CPU). They share the weight and bias
// tensors of the layer they replace, so an optimizer built before Prepare
// (qat/prepare.h) still updates them.
//
// C++ modules call their children through typed members, which a swap in
// the module tree cannot reach; a model that is to be prepared calls its
// layers through ForwardLayer, which dispatches on what is registered now:
//
//   x = lowbit::qat::ForwardLayer(*named_children()["fc1"], x);
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "lowbit/qat/estimators.h"
#include "lowbit/qat/fake_quantizer.h"
#include "lowbit/qat/quantizer_config.h"

namespace lowbit::qat {

// How one layer is quantized; an absent quantizer leaves that operand fp32.
struct LayerConfig {
  std::optional<QuantizerConfig> weight;
  std::optional<QuantizerConfig> input;
  GradientQuant gradient;
};

// A layer ForwardLayer can call: the quantized layers here and in qat/convert.h.
class QuantLayer : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // Fraction of weight levels that flipped at the last training step (-1: not tracked).
  double LastFlipFraction() const;
  FakeQuantizer weight_quantizer{nullptr};
  FakeQuantizer input_quantizer{nullptr};

 protected:
  void SetUp(const LayerConfig& config, const at::Tensor& weight, int64_t in_channels);
  at::Tensor QuantizeOutputGradient(const at::Tensor& y);

  GradientQuant gradient_;
  at::Tensor gradient_draws_;  // buffer: keys of the stochastic gradient rounding
};

class QuantLinearImpl : public QuantLayer {
 public:
  QuantLinearImpl(const torch::nn::Linear& source, const LayerConfig& config);
  at::Tensor forward(const at::Tensor& x) override;

  torch::nn::LinearOptions options;
  at::Tensor weight, bias;
};
TORCH_MODULE(QuantLinear);

class QuantConv2dImpl : public QuantLayer {
 public:
  QuantConv2dImpl(const torch::nn::Conv2d& source, const LayerConfig& config);
  at::Tensor forward(const at::Tensor& x) override;

  torch::nn::detail::ConvNdOptions<2> options;
  at::Tensor weight, bias;
};
TORCH_MODULE(QuantConv2d);

// Conv2d with the options of `options`, for QuantConv2d and its converted form.
at::Tensor Conv2dWithOptions(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const torch::nn::detail::ConvNdOptions<2>& options);

// Calls `layer` (Linear, Conv2d or a QuantLayer) on x; anything else is an
// error naming the module's type.
at::Tensor ForwardLayer(torch::nn::Module& layer, const at::Tensor& x);

}  // namespace lowbit::qat
