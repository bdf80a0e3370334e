#include "lowbit/qat/quant_modules.h"

#include <torch/torch.h>

#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::qat {

namespace {

int64_t NumWeightScales(const QuantizerConfig& c, const at::Tensor& weight) {
  switch (c.granularity) {
    case Granularity::kPerTensor: return 1;
    case Granularity::kPerChannel: return weight.size(0);
    case Granularity::kPerGroup: {
      const int64_t fan_in = weight.numel() / weight.size(0);
      TORCH_CHECK(c.group_size >= 1 && fan_in % c.group_size == 0, "weight quantizer: group_size must divide the ",
                  "fan-in (", fan_in, "), got ", c.group_size);
      return weight.numel() / c.group_size;
    }
  }
  return 1;
}

}  // namespace

double QuantLayer::LastFlipFraction() const {
  return weight_quantizer ? weight_quantizer->LastFlipFraction() : -1.0;
}

void QuantLayer::SetUp(const LayerConfig& config, const at::Tensor& weight, int64_t in_channels) {
  if (config.weight) {
    weight_quantizer = register_module(
        "weight_quantizer", FakeQuantizer(*config.weight, NumWeightScales(*config.weight, weight), /*is_weight=*/true));
  }
  if (config.input) {
    const int64_t n = config.input->granularity == Granularity::kPerChannel ? in_channels : 1;
    input_quantizer = register_module("input_quantizer", FakeQuantizer(*config.input, n, /*is_weight=*/false));
  }
  gradient_ = config.gradient;
  if (gradient_.kind != GradientQuant::kNone) {
    gradient_draws_ = register_buffer("gradient_draws", torch::zeros({1}, torch::kDouble));
  }
}

at::Tensor QuantLayer::QuantizeOutputGradient(const at::Tensor& y) {
  if (gradient_.kind == GradientQuant::kNone || !is_training() || !y.requires_grad()) return y;
  const auto draw = static_cast<uint64_t>(gradient_draws_.item<double>());
  gradient_draws_.add_(1);
  return QuantizeGradient(y, gradient_, kernels::MixKey(0x9e3779b9ULL, draw));
}

QuantLinearImpl::QuantLinearImpl(const torch::nn::Linear& source, const LayerConfig& config)
    : options(source->options) {
  weight = register_parameter("weight", source->weight);
  if (source->bias.defined()) bias = register_parameter("bias", source->bias);
  SetUp(config, weight, options.in_features());
}

at::Tensor QuantLinearImpl::forward(const at::Tensor& x) {
  const at::Tensor xq = input_quantizer ? input_quantizer->forward(x) : x;
  const at::Tensor wq = weight_quantizer ? weight_quantizer->forward(weight) : weight;
  return QuantizeOutputGradient(torch::nn::functional::linear(xq, wq, bias));
}

QuantConv2dImpl::QuantConv2dImpl(const torch::nn::Conv2d& source, const LayerConfig& config)
    : options(source->options) {
  TORCH_CHECK(c10::holds_alternative<torch::enumtype::kZeros>(options.padding_mode()),
              "QuantConv2d: only zero padding is supported, got padding mode ",
              torch::enumtype::get_enum_name(options.padding_mode()));
  weight = register_parameter("weight", source->weight);
  if (source->bias.defined()) bias = register_parameter("bias", source->bias);
  SetUp(config, weight, options.in_channels());
}

at::Tensor Conv2dWithOptions(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const torch::nn::detail::ConvNdOptions<2>& options) {
  if (const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&options.padding())) {
    return at::conv2d(x, weight, bias, *options.stride(), **pad, *options.dilation(), options.groups());
  }
  const bool same = c10::holds_alternative<torch::enumtype::kSame>(options.padding());
  return at::conv2d(x, weight, bias, *options.stride(), same ? "same" : "valid", *options.dilation(),
                    options.groups());
}

at::Tensor QuantConv2dImpl::forward(const at::Tensor& x) {
  const at::Tensor xq = input_quantizer ? input_quantizer->forward(x) : x;
  const at::Tensor wq = weight_quantizer ? weight_quantizer->forward(weight) : weight;
  return QuantizeOutputGradient(Conv2dWithOptions(xq, wq, bias, options));
}

at::Tensor ForwardLayer(torch::nn::Module& layer, const at::Tensor& x) {
  if (auto* q = dynamic_cast<QuantLayer*>(&layer)) return q->forward(x);
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(&layer)) return l->forward(x);
  if (auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(&layer)) return c->forward(x);
  TORCH_CHECK(false, "ForwardLayer: cannot call a ", layer.name(),
              " (Linear, Conv2d, QuantLinear, QuantConv2d and their converted forms can be called)");
}

}  // namespace lowbit::qat
