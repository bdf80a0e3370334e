// Convert: replaces each QuantLinear/QuantConv2d of a prepared model by a
// layer that stores its weight as integers: the weight's integer levels
// (int8, or uint8 for grids above 127) and the grid's scales, zero points and
// offsets. Its forward dequantizes them, applies the input quantizer it
// keeps, and runs the float layer, so its output equals the fake-quant
// model's in eval mode bit for bit.
//
//   lowbit::qat::Convert(*model);                       // after training
//   lowbit::qat::SaveQuantized(*model, "model.lbq");
//   ... a fresh model, Prepare(same config), Convert ...
//   lowbit::qat::LoadQuantized(*fresh, "model.lbq");
//
// File format (a LibTorch archive, readable with torch::load or Python's
// torch.jit.load): "format" = int64 [1] (1); then for each converted layer,
// under its dotted name N:
//   N.weight_codes         int8 or uint8, the weight's shape: integer levels
//   N.weight_scale         float [k]: one per scale group (see weight_layout)
//   N.weight_zero_point    float [k] (absent: 0)
//   N.weight_offset        float [k] (absent: 0)
//   N.weight_grid          int64 [5]: qmin, qmax, layout (0 tensor, 1 rows,
//                          2 groups, 3 palette), group size, Hadamard block (0: none)
//   N.bias                 float [out] (absent: none)
//   N.input_quantizer.*    the input quantizer's state (qat/fake_quantizer.h)
// A palette (DKM) stores each weight's centroid index as its code and the
// centroids as weight_scale: W = weight_scale[codes]. Otherwise
// the weight is W = ((codes - zero_point) * scale + offset) per group of the
// [out, fan_in] view, then, if the block is not 0, multiplied on the right
// by the orthonormal block Walsh-Hadamard matrix (QuEST stores the rotated
// weight).
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "lowbit/qat/quant_modules.h"

namespace lowbit::qat {

class QuantizedLayerBase : public torch::nn::Module, public QuantLayer {
 public:
  // The dequantized weight, in the layer's weight shape.
  at::Tensor Weight() const override;
  // A converted layer has its grid already: refused.
  void Configure(const LayerConfig& config) override;
  at::Tensor weight_codes, weight_scale, weight_zero_point, weight_offset, weight_grid, bias;

 protected:
  // Stores `source`'s weight as levels of its weight quantizer's grid.
  void StoreWeight(QuantLayer& source, const at::Tensor& weight, const at::Tensor& source_bias);
};

class QuantizedLinearImpl : public QuantizedLayerBase {
 public:
  explicit QuantizedLinearImpl(QuantLinearImpl& source);
  at::Tensor forward(const at::Tensor& x) override;
};
TORCH_MODULE(QuantizedLinear);

class QuantizedConv2dImpl : public QuantizedLayerBase {
 public:
  explicit QuantizedConv2dImpl(QuantConv2dImpl& source);
  at::Tensor forward(const at::Tensor& x) override;
  torch::nn::detail::ConvNdOptions<2> options;
};
TORCH_MODULE(QuantizedConv2d);

// Converts every QuantLinear/QuantConv2d with a weight quantizer on an
// integer grid (int, ternary, binary, QuEST); returns their dotted names.
// Layers without one stay as they are; mini-float weights are refused,
// naming the layer. Puts the module in eval mode.
std::vector<std::string> Convert(torch::nn::Module& module);

void SaveQuantized(torch::nn::Module& module, const std::string& path);
// Into a model converted the same way; names and shapes must match.
void LoadQuantized(torch::nn::Module& module, const std::string& path);

}  // namespace lowbit::qat
