// FakeQuantizer: a module that fake-quantizes a weight or an activation as
// its QuantizerConfig says, with the state that training depends on (learned
// step sizes and offsets, PACT's alpha, observer statistics, the stochastic
// rounding counter) registered as parameters and buffers, so it is saved and
// restored with the model.
//
// Weights are quantized as a [out, fan_in] view (per channel: one scale per
// output row; per group: groups of the fan-in); activations as they come,
// with channels on dimension 1. In training the observers update and the
// LSQ/PACT parameters initialise from the first batch they see (call it on
// the same batch on every rank: the calibration forward in qat/prepare.h); in eval mode an
// activation quantizer uses its stored scale.
//
//   FakeQuantizer wq(config, /*num_scales=*/out_features, /*is_weight=*/true);
//   at::Tensor w_hat = wq->forward(linear->weight);
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "lowbit/kernels/fake_quant.h"
#include "lowbit/qat/quantizer_config.h"

namespace lowbit::qat {

// The grid a quantizer used: y = (clamp(round((x - offset) / scale) + zp,
// qmin, qmax) - zp) * scale + offset per scale group (mini-floats: scale
// only). Undefined tensors mean 0.
struct QuantGrid {
  at::Tensor scale, zero_point, offset;
  int64_t qmin = 0, qmax = 0;
  kernels::ScaleLayout layout;
};

class FakeQuantizerImpl : public torch::nn::Module {
 public:
  // num_scales: 1 per tensor, the channel count per channel, numel / group
  // size per group (weights only).
  FakeQuantizerImpl(QuantizerConfig config, int64_t num_scales, bool is_weight);

  at::Tensor forward(const at::Tensor& x);

  const QuantizerConfig& config() const { return config_; }
  bool is_weight() const { return is_weight_; }
  // Whether LSQ/PACT parameters and observer statistics have been set from data.
  bool initialized() const;
  // The integer grid of the last forward (int-like formats, not QuEST).
  QuantGrid Grid() const;
  // Fraction of elements whose integer level changed between the last two
  // training forwards (weights; -1 before two, or for QuEST and mini-floats).
  double LastFlipFraction() const { return last_flip_fraction_; }
  // Oscillation freezing (QuantizerConfig::freeze_threshold): which elements
  // of the [out, fan_in] view are frozen, and their fraction.
  at::Tensor FrozenMask() const { return frozen_.defined() ? frozen_.to(at::kBool) : at::Tensor(); }
  double FrozenFraction() const;
  // Tequila (QuantizerConfig::dead_zone_bias): lambda * the sum of each
  // output row's dead-zone weights (level 0) at the last forward, [out], with
  // its graph: the layer adds it to its output, so dead-zone weights get
  // lambda times the output gradient. Undefined when off.
  const at::Tensor& DeadZoneBias() const { return dead_zone_bias_; }

  // DKM (kPalette weights): the learned centroids, sorted ([2^bits]), and
  // each element's nearest one (int64, the weight's shape): what Convert stores.
  at::Tensor Centroids() const { return centroids_; }
  at::Tensor PaletteIndices(const at::Tensor& weight) const;
  // Bytes of the last training forward's attention maps (all iterations).
  int64_t LastAttentionBytes() const { return last_attention_bytes_; }

  // Weights: the [out, fan_in] view's shape, for state kept per element
  // (oscillation freezing). QuantLayer calls it once, before any forward.
  void SetWeightShape(int64_t rows, int64_t cols);

  // EfficientQAT's E2E-QP (Chen et al. 2024): fixes the integer levels of
  // `weight` on the current grid; from then on forward returns
  // (levels - zero point) * step + offset, whatever weight it is given, and
  // only the learned step (and LSQ+'s offset) get gradients. Needs an LSQ or
  // LSQ+ weight quantizer. The levels are a buffer ("frozen_levels"), saved
  // with the model.
  void FreezeLevels(const at::Tensor& weight);
  bool levels_frozen() const { return frozen_levels_.defined(); }

 private:
  at::Tensor Observe(const at::Tensor& x);  // updates scale_/zero_point_ in training
  void InitializeLearned(const at::Tensor& x);
  void TrackFlips(const at::Tensor& y, const at::Tensor& known_codes = {});  // known_codes: Codes(y) if computed
  at::Tensor Codes(const at::Tensor& y) const;            // integer levels of a quantized [out, fan_in] y
  at::Tensor ApplyFreezing(const at::Tensor& y);          // oscillation tracking and frozen levels
  at::Tensor FromCodes(const at::Tensor& codes) const;    // (codes - zp) * step + offset, differentiable in step
  at::Tensor ByScale(const at::Tensor& x) const;  // [num_scales, rest] view of x
  bool IsLsq() const { return config_.estimator == Estimator::kLsq || config_.estimator == Estimator::kLsqPlus; }

  QuantizerConfig config_;
  int64_t num_scales_;
  bool is_weight_;
  kernels::ScaleLayout layout_;
  int64_t qmin_ = 0, qmax_ = 0;
  at::Tensor scale_;        // parameter log s (LSQ) or buffer s, [num_scales]
  at::Tensor offset_;       // parameter (LSQ+), [num_scales]
  at::Tensor zero_point_;   // buffer (affine int), [num_scales]
  at::Tensor alpha_;        // parameter (PACT), [1]
  at::Tensor min_, max_;    // buffers (moving average), [num_scales]
  at::Tensor initialized_;  // buffer, 0 or 1
  at::Tensor draws_;        // buffer: stochastic-rounding calls so far
  at::Tensor prev_codes_;   // not saved: flip tracking only
  double last_flip_fraction_ = -1.0;
  // Oscillation freezing, [out, fan_in] (buffers, created at the first training forward).
  at::Tensor osc_prev_codes_, osc_prev_dir_, osc_ema_, osc_ema_codes_, frozen_, frozen_codes_, osc_steps_;
  at::Tensor dead_zone_bias_;  // Tequila, not state
  at::Tensor frozen_levels_;   // E2E-QP (buffer once frozen)
  at::Tensor centroids_, dkm_tau_;  // DKM (buffers)
  int64_t last_attention_bytes_ = 0;
  at::Tensor Dkm(const at::Tensor& x);
};
TORCH_MODULE(FakeQuantizer);

}  // namespace lowbit::qat
