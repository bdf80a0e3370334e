#include "lowbit/qat/convert.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/kernels/archive_file.h"
#include "lowbit/kernels/fake_quant.h"
#include "lowbit/qat/internal/layer_walk.h"

namespace lowbit::qat {

namespace {

namespace k = lowbit::kernels;

// Broadcasts a per-group tensor [k] against the [out, fan_in] view as
// [k, 1] over the matching [k, rest] reshaping of it.
// weight_grid's layout for a palette (DKM): weight_scale holds the centroids.
constexpr int64_t kPaletteLayout = 3;

at::Tensor ByGroup(const at::Tensor& w2d, int64_t layout_kind, int64_t num) {
  switch (layout_kind) {
    case 0: return w2d.reshape({1, -1});
    default: return w2d.reshape({num, -1});
  }
}

}  // namespace

void QuantizedLayerBase::Configure(const LayerConfig&) {
  LOWBIT_CHECK(false, "qat: a converted ", name(), " holds integer weights and cannot be prepared again");
}

void QuantizedLayerBase::StoreWeight(QuantLayer& source, const at::Tensor& weight, const at::Tensor& source_bias) {
  torch::NoGradGuard no_grad;
  FakeQuantizerImpl& wq = *source.weight_quantizer;
  const QuantizerConfig& c = wq.config();
  at::Tensor w2d = weight.detach().reshape({weight.size(0), -1}).contiguous();
  QuantGrid g;
  int64_t block = 0;
  at::Tensor codes;
  if (c.format == Format::kPalette) {
    // DKM: each weight's nearest centroid; the centroids are the scales of
    // layout 3 (palette): W = weight_scale[codes].
    codes = wq.PaletteIndices(weight).reshape({weight.size(0), -1});
    g.scale = wq.Centroids().clone();
    g.qmin = 0;
    g.qmax = g.scale.numel() - 1;
    g.layout.kind = static_cast<k::ScaleLayout::Kind>(kPaletteLayout);
  } else if (c.estimator == Estimator::kQuest) {
    // The rotated weight on QuEST's grid: level k, step and -clip per row.
    block = QuestBlock(w2d.size(1), c.hadamard_block);
    at::Tensor rows = w2d.clone();
    k::FastWalshHadamard_(rows, block);
    at::Tensor mask, clips;
    at::Tensor yh = k::QuestQuantizeRows(rows, QuestGaussianClip(c.bits), c.bits, &mask, &clips);
    const float levels = static_cast<float>((1 << c.bits) - 1);
    at::Tensor step = 2.0f * clips / levels;
    codes = torch::round((yh + clips.view({-1, 1})) / step.view({-1, 1})).clamp(0, levels);
    g.scale = step;
    g.offset = -clips;
    g.qmin = 0;
    g.qmax = (1 << c.bits) - 1;
    g.layout = {k::ScaleLayout::kPerChannel, 0, 0};
  } else {
    wq.eval();
    // The observers' grid for this weight, and the weight on it: frozen
    // levels (oscillation freezing, E2E-QP) are what forward returns, so
    // the levels are taken from its output.
    const at::Tensor y = wq.forward(weight.detach()).reshape({weight.size(0), -1}).contiguous();
    g = wq.Grid();
    codes = k::QuantizeIntCodes(y, g.scale.contiguous(), g.zero_point, g.offset.defined() ? g.offset.contiguous() : g.offset,
                                g.qmin, g.qmax, g.layout);
  }
  at::Tensor folded_bias = source_bias.defined() ? source_bias.detach().clone() : at::Tensor();
  if (wq.DeadZoneBias().defined()) {
    // Tequila's dead-zone bias is a constant of the weights: folded into the bias.
    const at::Tensor dzb = wq.DeadZoneBias().detach();
    folded_bias = folded_bias.defined() ? folded_bias + dzb : dzb.clone();
  }
  const bool fits_int8 = g.qmin >= -128 && g.qmax <= 127;
  weight_codes = register_buffer("weight_codes", codes.to(fits_int8 ? torch::kChar : torch::kByte).view(weight.sizes()));
  weight_scale = register_buffer("weight_scale", g.scale.clone().contiguous());
  if (g.zero_point.defined()) weight_zero_point = register_buffer("weight_zero_point", g.zero_point.clone());
  if (g.offset.defined()) weight_offset = register_buffer("weight_offset", g.offset.clone().contiguous());
  weight_grid = register_buffer("weight_grid", torch::tensor({g.qmin, g.qmax, static_cast<int64_t>(g.layout.kind),
                                                              g.layout.group_size, block}, torch::kLong));
  if (folded_bias.defined()) bias = register_buffer("bias", folded_bias);
  if (source.input_quantizer) input_quantizer = register_module("input_quantizer", source.input_quantizer);
}

at::Tensor QuantizedLayerBase::Weight() const {
  const int64_t kind = weight_grid[2].item<int64_t>(), block = weight_grid[4].item<int64_t>();
  const int64_t num = weight_scale.numel();
  const std::vector<int64_t> shape = weight_codes.sizes().vec();
  if (kind == kPaletteLayout) return weight_scale.index_select(0, weight_codes.to(torch::kLong).view({-1})).view(shape);
  at::Tensor w = ByGroup(weight_codes.to(torch::kFloat).reshape({shape[0], -1}), kind, num);
  // The kernel's arithmetic, in its order: (c - zp) * s + b.
  if (weight_zero_point.defined()) w = w - weight_zero_point.view({-1, 1});
  w = w * weight_scale.view({-1, 1});
  if (weight_offset.defined()) w = w + weight_offset.view({-1, 1});
  w = w.reshape({shape[0], -1}).contiguous();
  if (block > 0) k::FastWalshHadamard_(w, block);
  return w.view(shape);
}

QuantizedLinearImpl::QuantizedLinearImpl(QuantLinearImpl& source) { StoreWeight(source, source.weight, source.bias); }

at::Tensor QuantizedLinearImpl::forward(const at::Tensor& x) {
  const at::Tensor xq = input_quantizer ? input_quantizer->forward(x) : x;
  return torch::nn::functional::linear(xq, Weight(), bias);
}

QuantizedConv2dImpl::QuantizedConv2dImpl(QuantConv2dImpl& source) : options(source.options) {
  StoreWeight(source, source.weight, source.bias);
}

at::Tensor QuantizedConv2dImpl::forward(const at::Tensor& x) {
  const at::Tensor xq = input_quantizer ? input_quantizer->forward(x) : x;
  return Conv2dWithOptions(xq, Weight(), bias, options);
}

namespace {

// Replaces each convertible layer below `root`; returns their dotted names.
std::vector<std::string> ConvertLayers(torch::nn::Module& root) {
  std::vector<std::string> converted;
  internal::WalkChildren(root, "", [&](torch::nn::Module& parent, const std::string& key, const std::string& dotted,
                                       torch::nn::Module& child) {
    auto* layer = dynamic_cast<QuantLayer*>(&child);
    if (layer == nullptr) return true;
    if (!layer->weight_quantizer || dynamic_cast<QuantizedLayerBase*>(layer) != nullptr) return false;
    const QuantizerConfig& c = layer->weight_quantizer->config();
    LOWBIT_CHECK(!IsMiniFloat(c.format), "Convert: layer '", dotted, "' has ", ToString(c),
                 " weights; Convert stores integer levels (int, ternary, binary, QuEST or palette weights)");
    const std::shared_ptr<torch::nn::Module> old = parent.named_children()[key];
    if (auto* lin = dynamic_cast<QuantLinearImpl*>(layer)) {
      internal::ReplaceChild(parent, key, old, QuantizedLinear(*lin));
    } else if (auto* conv = dynamic_cast<QuantConv2dImpl*>(layer)) {
      internal::ReplaceChild(parent, key, old, QuantizedConv2d(*conv));
    } else {
      return false;
    }
    converted.push_back(dotted);
    return false;
  });
  return converted;
}

}  // namespace

std::vector<std::string> Convert(torch::nn::Module& module) {
  module.eval();
  const std::vector<std::string> converted = ConvertLayers(module);
  module.eval();
  return converted;
}

void SaveQuantized(torch::nn::Module& module, const std::string& path) {
  torch::serialize::OutputArchive archive;
  archive.write("format", torch::tensor({int64_t{1}}));
  for (const auto& b : module.named_buffers(true)) archive.write(b.key(), b.value(), /*is_buffer=*/true);
  for (const auto& p : module.named_parameters(true)) archive.write(p.key(), p.value());
  archive.save_to(path);
}

void LoadQuantized(torch::nn::Module& module, const std::string& path) {
  torch::serialize::InputArchive archive;
  kernels::LoadArchive(archive, path, "LoadQuantized");
  at::Tensor format;
  LOWBIT_CHECK(archive.try_read("format", format) && format.numel() == 1 && format.scalar_type() == torch::kLong &&
                   format.item<int64_t>() == 1,
               "LoadQuantized: ", path, " is not a lowbit quantized model (format 1)");
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor& t, bool is_buffer) {
    at::Tensor saved;
    LOWBIT_CHECK(archive.try_read(name, saved, is_buffer), "LoadQuantized: ", path, " has no '", name,
                 "' (a different model or config?)");
    LOWBIT_CHECK(saved.sizes() == t.sizes() && saved.scalar_type() == t.scalar_type(), "LoadQuantized: '", name,
                 "' is ", saved.scalar_type(), saved.sizes(), " in ", path, ", the model has ", t.scalar_type(),
                 t.sizes());
    t.copy_(saved);
  };
  for (auto& b : module.named_buffers(true)) load(b.key(), b.value(), true);
  for (auto& p : module.named_parameters(true)) load(p.key(), p.value(), false);
}

}  // namespace lowbit::qat
