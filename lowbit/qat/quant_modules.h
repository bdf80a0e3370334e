// lowbit::qat::Linear and lowbit::qat::Conv2d: LibTorch's Linear and Conv2d,
// and exactly them (same options, parameters, initialisation and output)
// until Prepare (qat/prepare.h) configures them; from then on their forward
// fake-quantizes the weight and the input and, for low-bit training, the
// output gradient (forward on int8/fp8 operands, backward from a
// stochastically rounded int8/fp8 output gradient, emulated on CPU).
//
// A model written the ordinary LibTorch way, with typed members called as
// `fc1(x)`, keeps working when it declares them with these types:
//
//   struct NetImpl : torch::nn::Module {
//     NetImpl() { fc1 = register_module("fc1", lowbit::qat::Linear(784, 128)); }
//     at::Tensor forward(at::Tensor x) { return fc1(x); }
//     lowbit::qat::Linear fc1{nullptr};
//   };
//
// Plain torch::nn::Linear/Conv2d children are replaced by these (sharing the
// weight and bias tensors) where Prepare can reach the caller: inside
// Sequential, ModuleList and ModuleDict, and for models that call children
// through ForwardLayer. A typed torch::nn::Linear member keeps calling the
// old, fp32 layer; its first backward then throws, naming every prepared
// layer that was never called (see Note [Unreached layers] in
// quant_modules.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

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

namespace internal {
struct PreparedSet;
}  // namespace internal

// A layer ForwardLayer can call: Linear and Conv2d here, and the converted
// layers in qat/convert.h. An interface beside torch::nn::Module, not derived
// from it: the layers derive from LibTorch's modules, whose Module base is
// virtual in 1.13 and plain in 2.x, so a second path to Module would be a
// second Module in 2.x. dynamic_cast crosses between the two.
class QuantLayer {
 public:
  virtual ~QuantLayer() = default;
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // The weight the layer computes with (dequantized, for converted layers).
  virtual at::Tensor Weight() const = 0;
  // Fraction of weight levels that flipped at the last training step (-1: not tracked).
  double LastFlipFraction() const;
  // Whether Prepare configured this layer (or it was built configured).
  bool configured() const { return configured_; }
  // Whether a configured layer's forward has run since Prepare (layers not
  // prepared by Prepare count as called).
  bool WasCalled() const { return !called_ || *called_; }
  FakeQuantizer weight_quantizer{nullptr};
  FakeQuantizer input_quantizer{nullptr};

  // Used by Prepare: registers the quantizers of `config` on this layer.
  // Throws if the layer is configured already.
  virtual void Configure(const LayerConfig& config) = 0;
  // Used by Prepare: this layer joins `set` as `name`, and its weight's
  // gradient checks that the layer was called (Note [Unreached layers]).
  void Track(const std::shared_ptr<internal::PreparedSet>& set, const std::string& name);

 protected:
  // This layer as the module it also is.
  torch::nn::Module& Self();
  const torch::nn::Module& Self() const;
  void SetUp(const LayerConfig& config, const at::Tensor& weight, int64_t in_channels);
  at::Tensor QuantizeInput(const at::Tensor& x);
  at::Tensor QuantizeWeight(const at::Tensor& w);
  at::Tensor QuantizeOutputGradient(const at::Tensor& y);
  // The layer's bias plus, after QuantizeWeight, Tequila's dead-zone bias
  // (QuantizerConfig::dead_zone_bias).
  at::Tensor LayerBias(const at::Tensor& bias) const;

  GradientQuant gradient_;
  at::Tensor gradient_draws_;  // buffer: keys of the stochastic gradient rounding
  bool configured_ = false;
  std::shared_ptr<bool> called_;  // shared with the weight's gradient hook
};

class LinearImpl : public torch::nn::LinearImpl, public QuantLayer {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  // A configured layer sharing `source`'s weight and bias tensors.
  LinearImpl(const torch::nn::Linear& source, const LayerConfig& config);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor Weight() const override { return weight; }
  void Configure(const LayerConfig& config) override;
  // A copy would be a plain torch::nn::Linear and silently fp32: refused.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device) const override;
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Conv2dImpl, public QuantLayer {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  Conv2dImpl(const torch::nn::Conv2d& source, const LayerConfig& config);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor Weight() const override { return weight; }
  void Configure(const LayerConfig& config) override;
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device) const override;
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(Conv2d);

// The names the first stage used; the same types.
using QuantLinearImpl = LinearImpl;
using QuantLinear = Linear;
using QuantConv2dImpl = Conv2dImpl;
using QuantConv2d = Conv2d;

// Conv2d with the options of `options`, for QuantConv2d and its converted form.
at::Tensor Conv2dWithOptions(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const torch::nn::detail::ConvNdOptions<2>& options);

// Calls `layer` (torch's or lowbit's Linear or Conv2d, or a converted layer)
// on x, dispatching on what is registered now; anything else is an error
// naming the module's type. Models whose members are lowbit::qat::Linear and
// Conv2d do not need it.
//
//   x = lowbit::qat::ForwardLayer(*named_children()["fc1"], x);
at::Tensor ForwardLayer(torch::nn::Module& layer, const at::Tensor& x);

}  // namespace lowbit::qat
