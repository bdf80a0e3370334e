#include "lowbit/qat/quant_modules.h"

#include <torch/torch.h>

#include "absl/strings/str_join.h"
#include "lowbit/base/error.h"
#include "lowbit/base/torch_compat.h"
#include "lowbit/kernels/internal/counter_rng.h"
#include "lowbit/qat/internal/prepared_set.h"

namespace lowbit::qat {

namespace {

int64_t NumWeightScales(const QuantizerConfig& c, const at::Tensor& weight) {
  switch (c.granularity) {
    case Granularity::kPerTensor: return 1;
    case Granularity::kPerChannel: return weight.size(0);
    case Granularity::kPerGroup: {
      const int64_t fan_in = weight.numel() / weight.size(0);
      LOWBIT_CHECK(c.group_size >= 1 && fan_in % c.group_size == 0, "weight quantizer: group_size must divide the ",
                   "fan-in (", fan_in, "), got ", c.group_size);
      return weight.numel() / c.group_size;
    }
  }
  return 1;
}

}  // namespace

torch::nn::Module& QuantLayer::Self() { return dynamic_cast<torch::nn::Module&>(*this); }
const torch::nn::Module& QuantLayer::Self() const { return dynamic_cast<const torch::nn::Module&>(*this); }

double QuantLayer::LastFlipFraction() const {
  return weight_quantizer ? weight_quantizer->LastFlipFraction() : -1.0;
}

void QuantLayer::SetUp(const LayerConfig& config, const at::Tensor& weight, int64_t in_channels) {
  LOWBIT_CHECK(!configured_, "qat: this ", Self().name(), " is configured already (Prepare runs once per model)");
  if (config.weight) {
    weight_quantizer = Self().register_module(
        "weight_quantizer", FakeQuantizer(*config.weight, NumWeightScales(*config.weight, weight), /*is_weight=*/true));
    weight_quantizer->SetWeightShape(weight.size(0), weight.numel() / std::max<int64_t>(1, weight.size(0)));
  }
  if (config.input) {
    const int64_t n = config.input->granularity == Granularity::kPerChannel ? in_channels : 1;
    input_quantizer = Self().register_module("input_quantizer", FakeQuantizer(*config.input, n, /*is_weight=*/false));
  }
  gradient_ = config.gradient;
  if (gradient_.kind != GradientQuant::kNone) {
    gradient_draws_ = Self().register_buffer("gradient_draws", torch::zeros({1}, torch::kDouble));
  }
  configured_ = true;
}

// Note [Unreached layers]
// LibTorch calls a typed member (`fc1(x)` on a torch::nn::Linear) through
// its static type, so Prepare cannot reach a layer the model keeps in such a
// member: it replaces the layer in the module tree, and the model goes on
// calling the old one in fp32. The replacement shares the old layer's weight,
// so the gradient of that weight still arrives in backward; a hook on it
// checks that the replacement's forward ran first. If not, backward throws,
// naming every layer of the same Prepare call that was never called. (A
// forward-only use is checked by Calibrate in qat/prepare.h.)
void QuantLayer::Track(const std::shared_ptr<internal::PreparedSet>& set, const std::string& layer_name) {
  if (!called_) called_ = std::make_shared<bool>(false);
  set->layers.emplace_back(layer_name, called_);
  at::Tensor w = Weight();
  if (!w.requires_grad()) return;
  std::shared_ptr<bool> called = called_;
  w.register_hook([set, called](const at::Tensor&) {
    if (*called) return;
    LOWBIT_CHECK(false, "lowbit::qat: prepared layer(s) ", absl::StrJoin(set->Uncalled(), ", "),
                 " were never called, yet their weights got gradients: the model calls them through typed "
                 "torch::nn::Linear/Conv2d members, which Prepare cannot replace, so they trained in fp32. Declare "
                 "those members as lowbit::qat::Linear / lowbit::qat::Conv2d (qat/quant_modules.h), or call them "
                 "through lowbit::qat::ForwardLayer");
  });
}

at::Tensor QuantLayer::QuantizeInput(const at::Tensor& x) {
  if (called_) *called_ = true;
  return input_quantizer ? input_quantizer->forward(x) : x;
}

at::Tensor QuantLayer::QuantizeWeight(const at::Tensor& w) {
  return weight_quantizer ? weight_quantizer->forward(w) : w;
}

at::Tensor QuantLayer::LayerBias(const at::Tensor& bias) const {
  if (!weight_quantizer || !weight_quantizer->DeadZoneBias().defined()) return bias;
  const at::Tensor& dzb = weight_quantizer->DeadZoneBias();
  return bias.defined() ? bias + dzb : dzb;
}

at::Tensor QuantLayer::QuantizeOutputGradient(const at::Tensor& y) {
  if (gradient_.kind == GradientQuant::kNone || !Self().is_training() || !y.requires_grad()) return y;
  const auto draw = static_cast<uint64_t>(gradient_draws_.item<double>());
  gradient_draws_.add_(1);
  return QuantizeGradient(y, gradient_, kernels::MixKey(0x9e3779b9ULL, draw));
}

std::vector<std::string> internal::PreparedSet::Uncalled() const {
  std::vector<std::string> names;
  for (const auto& [layer_name, called] : layers) {
    if (!*called) names.push_back(layer_name);
  }
  return names;
}

LinearImpl::LinearImpl(const torch::nn::Linear& source, const LayerConfig& config)
    : LOWBIT_COMPAT_INIT_VIRTUAL_MODULE(*source) torch::nn::LinearImpl(*source) {
  Configure(config);
}

void LinearImpl::Configure(const LayerConfig& config) { SetUp(config, weight, options.in_features()); }

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  if (!configured_) return torch::nn::LinearImpl::forward(x);
  // A Linear's features are its input's last dimension; the quantizer sees
  // rows of features. Given [B, T, C] as it is, it would take dimension 1
  // (T) as the channels: QuEST's Hadamard rotation then mixed time steps,
  // and a causal model saw the future (a GPT reached 0.19 nats/char).
  const at::Tensor xq =
      x.dim() > 2 ? QuantizeInput(x.reshape({-1, x.size(-1)})).view(x.sizes()) : QuantizeInput(x);
  const at::Tensor w = QuantizeWeight(weight);
  return QuantizeOutputGradient(torch::nn::functional::linear(xq, w, LayerBias(bias)));
}

std::shared_ptr<torch::nn::Module> LinearImpl::clone(const c10::optional<torch::Device>&) const {
  LOWBIT_CHECK(false, "lowbit::qat::Linear cannot be cloned (the copy would be a plain torch::nn::Linear)");
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::qat::Linear(in_features=" << options.in_features() << ", out_features=" << options.out_features()
         << ", bias=" << options.bias() << (configured_ ? ", quantized" : "") << ")";
}

Conv2dImpl::Conv2dImpl(const torch::nn::Conv2d& source, const LayerConfig& config)
    : LOWBIT_COMPAT_INIT_VIRTUAL_MODULE(*source) torch::nn::Conv2dImpl(*source) {
  Configure(config);
}

void Conv2dImpl::Configure(const LayerConfig& config) {
  LOWBIT_CHECK(base::compat::HoldsAlternative<torch::enumtype::kZeros>(options.padding_mode()),
               "QuantConv2d: only zero padding is supported, got padding mode ",
               torch::enumtype::get_enum_name(options.padding_mode()));
  SetUp(config, weight, options.in_channels());
}

std::shared_ptr<torch::nn::Module> Conv2dImpl::clone(const c10::optional<torch::Device>&) const {
  LOWBIT_CHECK(false, "lowbit::qat::Conv2d cannot be cloned (the copy would be a plain torch::nn::Conv2d)");
}

void Conv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "lowbit::qat::Conv2d(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
         << (configured_ ? ", quantized" : "") << ")";
}

at::Tensor Conv2dWithOptions(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const torch::nn::detail::ConvNdOptions<2>& options) {
  if (const auto* pad = base::compat::GetIf<torch::ExpandingArray<2>>(&options.padding())) {
    return at::conv2d(x, weight, bias, *options.stride(), **pad, *options.dilation(), options.groups());
  }
  const bool same = base::compat::HoldsAlternative<torch::enumtype::kSame>(options.padding());
  return at::conv2d(x, weight, bias, *options.stride(), same ? "same" : "valid", *options.dilation(),
                    options.groups());
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  if (!configured_) return torch::nn::Conv2dImpl::forward(x);
  const at::Tensor xq = QuantizeInput(x);
  const at::Tensor w = QuantizeWeight(weight);
  return QuantizeOutputGradient(Conv2dWithOptions(xq, w, LayerBias(bias), options));
}

at::Tensor ForwardLayer(torch::nn::Module& layer, const at::Tensor& x) {
  if (auto* q = dynamic_cast<QuantLayer*>(&layer)) return q->forward(x);
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(&layer)) return l->forward(x);
  if (auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(&layer)) return c->forward(x);
  LOWBIT_CHECK(false, "ForwardLayer: cannot call a ", layer.name(),
               " (Linear, Conv2d, QuantLinear, QuantConv2d and their converted forms can be called)");
}

}  // namespace lowbit::qat
