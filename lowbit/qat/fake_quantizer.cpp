#include "lowbit/qat/fake_quantizer.h"

#include <torch/torch.h>

#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/qat/estimators.h"

namespace lowbit::qat {

namespace {

namespace k = lowbit::kernels;

k::MiniFloat MiniFloatOf(Format f) {
  switch (f) {
    case Format::kFp8E4M3: return k::MiniFloatE4M3();
    case Format::kFp8E5M2: return k::MiniFloatE5M2();
    default: return k::MiniFloatE2M1();
  }
}

constexpr double kMinScale = 1e-8;

}  // namespace

FakeQuantizerImpl::FakeQuantizerImpl(QuantizerConfig config, int64_t num_scales, bool is_weight)
    : config_(config), num_scales_(num_scales), is_weight_(is_weight) {
  const std::string where = is_weight ? "weight quantizer" : "input quantizer";
  CheckQuantizerConfig(config_, where);
  LOWBIT_CHECK(num_scales >= 1, where, ": num_scales must be >= 1, got ", num_scales);
  LOWBIT_CHECK(is_weight || config_.granularity != Granularity::kPerGroup, where,
               ": per-group scales are for weights (activation rows vary with the batch)");
  LOWBIT_CHECK(config_.estimator != Estimator::kStochastic || config_.granularity == Granularity::kPerTensor, where,
               ": stochastic rounding uses one scale per tensor, got ", ToString(config_));
  switch (config_.granularity) {
    case Granularity::kPerTensor: layout_.kind = k::ScaleLayout::kPerTensor; break;
    case Granularity::kPerChannel:
      layout_.kind = k::ScaleLayout::kPerChannel;
      layout_.axis = is_weight ? 0 : 1;
      break;
    case Granularity::kPerGroup:
      layout_.kind = k::ScaleLayout::kPerGroup;
      layout_.group_size = config_.group_size;
      break;
  }
  std::tie(qmin_, qmax_) = IntRange(config_);
  const auto ones = torch::ones({num_scales});
  if (config_.estimator == Estimator::kLsq || config_.estimator == Estimator::kLsqPlus) {
    // Learned as log s: always positive, and Adam's steps of about lr move s
    // by a fraction of itself instead of by lr (which overshoots small steps).
    scale_ = register_parameter("log_scale", torch::zeros({num_scales}));
    if (config_.estimator == Estimator::kLsqPlus) offset_ = register_parameter("offset", torch::zeros({num_scales}));
  } else {
    scale_ = register_buffer("scale", ones.clone());
  }
  if (config_.estimator == Estimator::kPact) {
    alpha_ = register_parameter("alpha", torch::full({1}, config_.pact_init > 0 ? config_.pact_init : 1.0));
  }
  if (config_.format == Format::kInt && !config_.symmetric) zero_point_ = register_buffer("zero_point", torch::zeros({num_scales}));
  if (config_.observer == Observer::kMovingAverageMinMax) {
    min_ = register_buffer("running_min", torch::zeros({num_scales}));
    max_ = register_buffer("running_max", torch::zeros({num_scales}));
  }
  if (config_.estimator == Estimator::kDkm) {
    LOWBIT_CHECK(is_weight, where, ": dkm clusters weights");
    centroids_ = register_buffer("centroids", torch::zeros({int64_t{1} << config_.bits}));
    dkm_tau_ = register_buffer("temperature", torch::zeros({1}));
  }
  if (config_.estimator == Estimator::kStatsQ) {
    LOWBIT_CHECK(is_weight, where, ": statsq is for weights (its scale is the weights' statistics)");
    offset_ = register_buffer("offset", torch::zeros({num_scales}));
  }
  LOWBIT_CHECK(is_weight || (config_.freeze_threshold == 0 && !config_.dead_zone_bias), where,
               ": freezing and the dead-zone bias are for weights");
  initialized_ = register_buffer("initialized", torch::zeros({1}));
  if (config_.estimator == Estimator::kStochastic) draws_ = register_buffer("draws", torch::zeros({1}, torch::kDouble));
}

bool FakeQuantizerImpl::initialized() const { return initialized_.item<float>() != 0.0f; }

at::Tensor FakeQuantizerImpl::ByScale(const at::Tensor& x) const {
  const int64_t n = x.numel();
  switch (layout_.kind) {
    case k::ScaleLayout::kPerTensor: return x.reshape({1, n});
    case k::ScaleLayout::kPerChannel: return x.movedim(layout_.axis, 0).reshape({num_scales_, -1});
    case k::ScaleLayout::kPerGroup: return x.reshape({num_scales_, layout_.group_size});
  }
  return x;
}

void FakeQuantizerImpl::InitializeLearned(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  at::Tensor rows = ByScale(x.detach());
  if (config_.estimator == Estimator::kLsq || config_.estimator == Estimator::kLsqPlus) {
    // LSQ's initial step: 2 mean|x| / sqrt(Q_P).
    const double qp = static_cast<double>(std::max<int64_t>(qmax_, 1));
    scale_.copy_((2.0 * rows.abs().mean(1) / std::sqrt(qp)).clamp_min(kMinScale).log());
  }
  if (config_.estimator == Estimator::kPact && config_.pact_init == 0) {
    alpha_.fill_(std::max(x.detach().max().item<double>(), kMinScale));
  }
  initialized_.fill_(1);
}

at::Tensor FakeQuantizerImpl::Observe(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  const bool frozen = !is_weight_ && !is_training() && initialized();
  if (frozen) return scale_;
  at::Tensor rows = ByScale(x.detach());
  at::Tensor lo, hi;
  switch (config_.observer) {
    case Observer::kMinMax:
    case Observer::kMse:
      lo = std::get<0>(rows.min(1));
      hi = std::get<0>(rows.max(1));
      break;
    case Observer::kMovingAverageMinMax: {
      at::Tensor blo = std::get<0>(rows.min(1)), bhi = std::get<0>(rows.max(1));
      if (!initialized()) {
        min_.copy_(blo);
        max_.copy_(bhi);
      } else if (is_training()) {
        min_.add_((blo - min_) * config_.averaging_constant);
        max_.add_((bhi - max_) * config_.averaging_constant);
      }
      lo = min_.clone();
      hi = max_.clone();
      break;
    }
    case Observer::kAbsMean:
      hi = rows.abs().mean(1);
      lo = -hi;
      break;
    case Observer::kPercentile: {
      const int64_t m = rows.size(1);
      const int64_t kth = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(config_.percentile / 100.0 * m)), 1, m);
      const bool sym = config_.symmetric || config_.format != Format::kInt;
      if (sym) {
        hi = std::get<0>(rows.abs().kthvalue(kth, 1));
        lo = -hi;
      } else {
        hi = std::get<0>(rows.kthvalue(kth, 1));
        lo = std::get<0>(rows.kthvalue(std::max<int64_t>(1, m - kth + 1), 1));
      }
      break;
    }
  }
  // Scale (and zero point) from a range.
  auto qparams = [&](const at::Tensor& l, const at::Tensor& h) -> std::pair<at::Tensor, at::Tensor> {
    if (config_.format == Format::kBinary) return {rows.abs().mean(1).clamp_min(kMinScale), at::Tensor()};
    if (IsMiniFloat(config_.format)) {
      return {(torch::max(l.abs(), h.abs()) / MiniFloatOf(config_.format).max_value).clamp_min(kMinScale), at::Tensor()};
    }
    const double span = static_cast<double>(qmax_ - qmin_);
    if (config_.format == Format::kInt && !config_.symmetric) {
      at::Tensor l0 = l.clamp_max(0), h0 = h.clamp_min(0);
      at::Tensor s = ((h0 - l0) / span).clamp_min(kMinScale);
      at::Tensor zp = (static_cast<double>(qmin_) - torch::round(l0 / s)).clamp(qmin_, qmax_);
      return {s, zp};
    }
    if (qmin_ == 0) return {(h.clamp_min(0) / static_cast<double>(qmax_)).clamp_min(kMinScale), at::Tensor()};
    return {(torch::max(l.abs(), h.abs()) / (span / 2.0)).clamp_min(kMinScale), at::Tensor()};
  };
  auto [s, zp] = qparams(lo, hi);
  if (config_.observer == Observer::kAbsMean) s = hi.clamp_min(kMinScale);  // the step is mean |x|
  if (config_.observer == Observer::kMse) {
    // Grid search over clipping ratios; the per-group squared error picks.
    at::Tensor best_err = torch::full({num_scales_}, std::numeric_limits<float>::infinity());
    for (int i = 0; i <= 35; ++i) {
      const double ratio = 1.0 - 0.02 * i;
      auto [cs, czp] = qparams(lo * ratio, hi * ratio);
      at::Tensor y;
      if (IsMiniFloat(config_.format)) {
        y = k::FakeQuantizeMiniFloat(x.detach().contiguous(), cs.contiguous(), MiniFloatOf(config_.format), layout_);
      } else if (config_.format == Format::kBinary) {
        break;  // mean |x| is already the L2-optimal binary scale
      } else {
        y = k::FakeQuantizeInt(x.detach().contiguous(), cs.contiguous(), czp, {}, qmin_, qmax_, layout_);
      }
      at::Tensor err = ByScale(y - x.detach()).pow(2).sum(1);
      at::Tensor better = err < best_err;
      best_err = torch::where(better, err, best_err);
      s = torch::where(better, cs, s);
      if (zp.defined()) zp = torch::where(better, czp, zp);
    }
  }
  scale_.copy_(s);
  if (zero_point_.defined()) zero_point_.copy_(zp);
  initialized_.fill_(1);
  return scale_;
}

void FakeQuantizerImpl::SetWeightShape(int64_t rows, int64_t cols) {
  LOWBIT_CHECK(is_weight_, "SetWeightShape: not a weight quantizer");
  if (config_.freeze_threshold > 0 && !frozen_.defined()) {
    const auto shape = std::vector<int64_t>{rows, cols};
    osc_prev_codes_ = register_buffer("osc_prev_levels", torch::zeros(shape));
    osc_prev_dir_ = register_buffer("osc_prev_direction", torch::zeros(shape));
    osc_ema_ = register_buffer("osc_frequency", torch::zeros(shape));
    osc_ema_codes_ = register_buffer("osc_mean_level", torch::zeros(shape));
    frozen_ = register_buffer("frozen", torch::zeros(shape));
    frozen_codes_ = register_buffer("frozen_level", torch::zeros(shape));
    osc_steps_ = register_buffer("osc_steps", torch::zeros({1}));
  }
}

double FakeQuantizerImpl::FrozenFraction() const {
  return frozen_.defined() ? frozen_.mean().item<double>() : 0.0;
}

at::Tensor FakeQuantizerImpl::PaletteIndices(const at::Tensor& weight) const {
  LOWBIT_CHECK(config_.format == Format::kPalette, "PaletteIndices: not a palette quantizer (", ToString(config_), ")");
  const at::Tensor flat = weight.detach().reshape({-1, 1});
  return std::get<1>((flat - centroids_.view({1, -1})).abs().min(1)).view(weight.sizes());
}

// DKM (Cho et al. 2022, Sec. 3): with d_ij = -|w_i - c_j| and
// A = softmax(d / tau) over the centroids, the centroids iterate
// c_j <- sum_i A_ij w_i / sum_i A_ij from the last step's (warm start) and
// the layer uses w_hat_i = sum_j A_ij c_j; gradients flow through every
// iteration. tau is dkm_temperature times the weights' standard deviation
// at the first forward. eDKM (Cho et al. 2023, Sec. 3.2): the attention map is built
// over the distinct fp16 values of the weights, each counted with its
// multiplicity (its value the mean of its weights, so gradients reach every
// weight), which for a large layer is a few thousand rows instead of
// millions. In eval mode each weight takes its nearest centroid, as a
// converted layer does.
at::Tensor FakeQuantizerImpl::Dkm(const at::Tensor& x) {
  const at::Tensor flat = x.reshape({-1});
  const int64_t k = centroids_.numel();
  if (!initialized()) {
    // Quantiles of the weights: a spread start that k-means refines.
    torch::NoGradGuard no_grad;
    const at::Tensor sorted = std::get<0>(flat.detach().sort());
    const at::Tensor at = ((torch::arange(k, torch::kDouble) + 0.5) / static_cast<double>(k) *
                           static_cast<double>(flat.numel() - 1))
                              .round()
                              .to(torch::kLong);
    centroids_.copy_(sorted.index_select(0, at));
    // The temperature in weight units, fixed from here on (DKM's tau is a constant).
    dkm_tau_.fill_(config_.dkm_temperature * std::max(flat.detach().std().item<double>(), 1e-12));
    initialized_.fill_(1);
  }
  if (!is_training()) return centroids_.index_select(0, PaletteIndices(flat).view({-1})).view(x.sizes());
  at::Tensor values = flat, counts, inverse;
  if (config_.dkm_unique) {
    // The fp16 bit patterns as int16 (unique has no half kernel on the CPU).
    auto [keys, inv, cnt] = at::_unique2(flat.detach().to(at::kHalf).view(at::kShort), /*sorted=*/true,
                                         /*return_inverse=*/true,
                                         /*return_counts=*/true);
    inverse = inv.view({-1});
    counts = cnt.to(at::kFloat);
    values = at::zeros({keys.numel()}, flat.options()).index_add(0, inverse, flat) / counts;
  }
  const double tau = dkm_tau_.item<double>();
  const double tol = 1e-6 * tau / config_.dkm_temperature;
  const at::Tensor u = values.view({-1, 1});
  const at::Tensor weight = counts.defined() ? counts.view({-1, 1}) : at::Tensor();
  at::Tensor c = centroids_.clone();
  at::Tensor a;
  last_attention_bytes_ = 0;
  for (int64_t it = 0; it < config_.dkm_iters; ++it) {
    a = at::softmax(-(u - c.view({1, -1})).abs() / tau, 1);
    last_attention_bytes_ += a.numel() * 4;
    const at::Tensor am = weight.defined() ? a * weight : a;
    const at::Tensor next = (am * u).sum(0) / am.sum(0).clamp_min(1e-30);
    const bool converged = (next - c).abs().max().item<double>() < tol;
    c = next;
    if (converged) break;
  }
  a = at::softmax(-(u - c.view({1, -1})).abs() / tau, 1);
  last_attention_bytes_ += a.numel() * 4;
  {
    torch::NoGradGuard no_grad;
    centroids_.copy_(std::get<0>(c.detach().sort()));
  }
  at::Tensor soft = a.matmul(c.view({-1, 1})).view({-1});
  if (inverse.defined()) soft = soft.index_select(0, inverse);
  return soft.view(x.sizes());
}

at::Tensor FakeQuantizerImpl::Codes(const at::Tensor& y) const {
  if (config_.format == Format::kPalette) return PaletteIndices(y).to(at::kFloat);
  const QuantGrid g = Grid();
  at::Tensor rows = ByScale(y.detach());
  at::Tensor v = g.offset.defined() ? rows - g.offset.detach().view({-1, 1}) : rows;
  at::Tensor codes = torch::round(v / g.scale.detach().view({-1, 1}));
  if (g.zero_point.defined()) codes = codes + g.zero_point.view({-1, 1});
  return codes.reshape(y.sizes());
}

at::Tensor FakeQuantizerImpl::FromCodes(const at::Tensor& codes) const {
  const QuantGrid g = Grid();
  // With the learned step (and LSQ+'s offset) in the graph: E2E-QP trains them.
  const at::Tensor step = IsLsq() ? scale_.exp() : g.scale;
  const at::Tensor offset = IsLsq() ? offset_ : g.offset;
  at::Tensor rows = ByScale(codes);
  if (g.zero_point.defined()) rows = rows - g.zero_point.view({-1, 1});
  at::Tensor y = rows * step.view({-1, 1});
  if (offset.defined()) y = y + offset.view({-1, 1});
  return y.reshape(codes.sizes());
}

// Nagel et al. 2022 ("Overcoming Oscillations in Quantization-Aware
// Training", Sec. 4.2), the tracking OFQ's annealing stage relies on: an
// oscillation is a level switch opposite to the element's previous switch;
// f = m * oscillated + (1 - m) f; an element with f > threshold is frozen at
// the rounded moving average of its level.
at::Tensor FakeQuantizerImpl::ApplyFreezing(const at::Tensor& y) {
  if (is_training()) {
    torch::NoGradGuard no_grad;
    const at::Tensor codes = Codes(y);
    const double m = config_.oscillation_momentum;
    if (osc_steps_.item<double>() == 0) {
      osc_prev_codes_.copy_(codes);
      osc_ema_codes_.copy_(codes);
    }
    osc_steps_.add_(1);
    const at::Tensor delta = osc_prev_codes_ - codes;
    const at::Tensor dir = delta.sign();
    const at::Tensor oscillated = (osc_prev_dir_ * dir).eq(-1).to(at::kFloat);
    osc_ema_.mul_(1 - m).add_(oscillated, m);
    osc_prev_dir_.copy_(at::where(delta.ne(0), dir, osc_prev_dir_));
    osc_prev_codes_.copy_(codes);
    const bool may_freeze = osc_steps_.item<double>() > static_cast<double>(config_.freeze_start);
    const at::Tensor newly = osc_ema_.gt(may_freeze ? config_.freeze_threshold : 2.0).logical_and(frozen_.eq(0));
    frozen_codes_.copy_(at::where(newly, torch::round(osc_ema_codes_).clamp(qmin_, qmax_), frozen_codes_));
    frozen_.copy_(at::where(newly, at::ones_like(frozen_), frozen_));
    osc_ema_codes_.mul_(1 - m).add_(codes, m);
  }
  if (frozen_.sum().item<double>() == 0) return y;
  return at::where(frozen_.to(at::kBool), FromCodes(frozen_codes_).detach(), y);
}

void FakeQuantizerImpl::FreezeLevels(const at::Tensor& weight) {
  LOWBIT_CHECK(is_weight_ && IsLsq(), "FreezeLevels: E2E-QP trains the weight quantizer's step size, so it needs an ",
               "lsq or lsq+ weight quantizer, got ", is_weight_ ? ToString(config_) : "an input quantizer");
  LOWBIT_CHECK(!frozen_levels_.defined(), "FreezeLevels: the levels are frozen already");
  torch::NoGradGuard no_grad;
  const at::Tensor w = weight.detach().reshape({weight.size(0), -1});
  if (!initialized()) InitializeLearned(w);
  const QuantGrid g = Grid();
  at::Tensor rows = ByScale(w);
  if (g.offset.defined()) rows = rows - g.offset.view({-1, 1});
  const at::Tensor codes = torch::round(rows / g.scale.view({-1, 1})).clamp(qmin_, qmax_).reshape(w.sizes());
  frozen_levels_ = register_buffer("frozen_levels", codes.to(at::kFloat));
}

void FakeQuantizerImpl::TrackFlips(const at::Tensor& y, const at::Tensor& known_codes) {
  if (!is_weight_ || !is_training() || config_.estimator == Estimator::kQuest || IsMiniFloat(config_.format)) return;
  torch::NoGradGuard no_grad;
  at::Tensor codes = (known_codes.defined() ? known_codes : Codes(y)).to(torch::kInt16);
  if (prev_codes_.defined() && prev_codes_.sizes() == codes.sizes()) {
    last_flip_fraction_ = codes.ne(prev_codes_).to(torch::kFloat).mean().item<double>();
  }
  prev_codes_ = codes;
}

QuantGrid FakeQuantizerImpl::Grid() const {
  QuantGrid g;
  g.layout = layout_;
  g.qmin = qmin_;
  g.qmax = qmax_;
  if (config_.estimator == Estimator::kPact) {
    g.scale = (alpha_.detach() / static_cast<double>(qmax_)).reshape({1});
    return g;
  }
  if (config_.estimator == Estimator::kStatsQ) {
    g.scale = scale_.detach();
    g.offset = offset_.detach();
    return g;
  }
  g.scale = IsLsq() ? scale_.detach().exp() : scale_.detach();
  if (config_.format == Format::kBinary) {
    // {-s, s} is the grid {0, 1} with step 2s, shifted by -s.
    g.scale = 2 * scale_.detach();
    g.offset = -scale_.detach();
    return g;
  }
  if (zero_point_.defined()) g.zero_point = zero_point_.detach();
  if (offset_.defined()) g.offset = offset_.detach();
  return g;
}

at::Tensor FakeQuantizerImpl::forward(const at::Tensor& input) {
  LOWBIT_CHECK(input.scalar_type() == at::kFloat, "FakeQuantizer: input must be float32, got ", input.scalar_type());
  const at::Tensor x = is_weight_ ? input.reshape({input.size(0), -1}) : input;
  if (!is_weight_ && config_.granularity == Granularity::kPerChannel) {
    LOWBIT_CHECK(x.dim() >= 2 && x.size(1) == num_scales_, "input quantizer: per-channel scales need ", num_scales_,
                 " channels on dimension 1, got shape ", x.sizes());
  }
  if (is_weight_ && layout_.kind == k::ScaleLayout::kPerGroup) {
    LOWBIT_CHECK(x.size(1) % config_.group_size == 0, "weight quantizer: group_size ", config_.group_size,
                 " must divide the fan-in ", x.size(1));
  }
  at::Tensor y;
  if (frozen_levels_.defined()) {
    LOWBIT_CHECK(x.sizes() == frozen_levels_.sizes(), "weight quantizer: its levels were frozen for shape ",
                 frozen_levels_.sizes(), ", got ", x.sizes());
    return FromCodes(frozen_levels_).view(input.sizes());
  }
  switch (config_.estimator) {
    case Estimator::kDkm:
      y = Dkm(x);
      break;
    case Estimator::kStatsQ: {
      // OFQ (Liu et al. 2023, Sec. 4.1): s = 2 mean |w| per group, levels
      // (k + 1/2) s / 2^(b-1), k in [-2^(b-1), 2^(b-1) - 1]: step s / 2^(b-1),
      // offset half a step; the gradient passes straight through.
      torch::NoGradGuard no_grad;
      const double n = static_cast<double>(int64_t{1} << (config_.bits - 1));
      scale_.copy_((2.0 * ByScale(x.detach()).abs().mean(1) / n).clamp_min(kMinScale));
      offset_.copy_(scale_ * 0.5);
      initialized_.fill_(1);
    }
      y = FakeQuantSte(x, scale_.contiguous(), {}, offset_.contiguous(), qmin_, qmax_, layout_, /*clipped=*/false);
      break;
    case Estimator::kQuest:
      y = FakeQuantQuest(x, config_.bits, config_.hadamard_block, 1);
      break;
    case Estimator::kLsq:
    case Estimator::kLsqPlus: {
      if (!initialized()) InitializeLearned(x);
      const int64_t per_scale = x.numel() / num_scales_;
      const double factor = 1.0 / std::sqrt(static_cast<double>(per_scale) * static_cast<double>(std::max<int64_t>(qmax_, 1)));
      y = FakeQuantLsq(x, scale_.exp(), offset_, qmin_, qmax_, layout_, factor);
      break;
    }
    case Estimator::kPact:
      if (!initialized()) InitializeLearned(x);
      y = FakeQuantPact(x, alpha_, config_.bits);
      break;
    case Estimator::kStochastic: {
      Observe(x);
      uint64_t key = 0x5157ULL;
      if (is_training()) {
        key += static_cast<uint64_t>(draws_.item<double>());
        draws_.add_(1);
      }
      y = FakeQuantStochastic(x, scale_.item<double>(), qmin_, qmax_, key);
      break;
    }
    case Estimator::kSte:
    case Estimator::kClippedSte: {
      Observe(x);
      const bool clipped = config_.estimator == Estimator::kClippedSte;
      if (IsMiniFloat(config_.format)) {
        y = FakeQuantMiniFloatSte(x, scale_, MiniFloatOf(config_.format), layout_, clipped);
      } else {
        const QuantGrid g = Grid();
        y = FakeQuantSte(x, g.scale.contiguous(), g.zero_point, g.offset.defined() ? g.offset.contiguous() : g.offset,
                         qmin_, qmax_, layout_, clipped);
      }
      break;
    }
  }
  if (frozen_.defined()) y = ApplyFreezing(y);
  at::Tensor codes;
  if (config_.dead_zone_bias) {
    // Tequila (Tequila: Trapping-free Ternary Quantization, 2025): the
    // dead-zone weights (level 0) come back as a bias, lambda * their row
    // sum, so they get lambda times the output gradient instead of only the
    // straight-through estimate.
    codes = Codes(y);
    dead_zone_bias_ = (x * codes.eq(0).to(at::kFloat)).sum(1) * config_.dead_zone_lambda;
  }
  TrackFlips(y, codes);  // the levels once per forward
  return is_weight_ ? y.view(input.sizes()) : y;
}

}  // namespace lowbit::qat
