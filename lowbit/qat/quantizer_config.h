// What one fake quantizer does: the number format, how scales are laid out,
// how they are found (an observer or a learned parameter), and which
// gradient estimator backward uses. See qat/fake_quantizer.h for the module
// and ../shared/design.md (qat/) for the formulas.
//
//   QuantizerConfig w;                       // int8, symmetric, per tensor, STE, min-max
//   w.bits = 4;
//   w.granularity = Granularity::kPerChannel;
//   w.estimator = Estimator::kLsq;           // learned step size
//   CheckQuantizerConfig(w, "fc1.weight");   // errors name the field and the value
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace lowbit::qat {

enum class Format {
  kInt,      // 1-8 bits, symmetric (zero point 0) or affine
  kTernary,  // {-s, 0, s}
  kBinary,   // {-s, s}, s = mean |x| per scale group (XNOR-Net)
  kFp8E4M3,  // scale * e4m3 (max 448)
  kFp8E5M2,  // scale * e5m2 (max 57344)
  kFp4E2M1,  // scale * e2m1 (max 6)
  kPalette,  // 2^bits learned centroids per tensor (DKM), any values
};

enum class Granularity { kPerTensor, kPerChannel, kPerGroup };

enum class Estimator {
  kSte,         // identity gradient (Bengio et al. 2013)
  kClippedSte,  // identity inside the representable range, 0 outside
  kLsq,         // learned step size (Esser et al. 2020)
  kLsqPlus,     // LSQ with a learned offset (Bhalgat et al. 2020)
  kPact,        // learned clipping of activations (Choi et al. 2018)
  kQuest,       // Hadamard + Gaussian-optimal clipping + trust mask (Panferov et al. 2025)
  kStochastic,  // stochastic rounding, identity gradient
  kStatsQ,      // weights: scale 2 mean|w| per group, half-integer grid, STE (OFQ, Liu et al. 2023)
  kDkm,         // kPalette weights: differentiable k-means (DKM, Cho et al. 2022; eDKM 2023)
};

enum class Observer {
  kMinMax,               // min/max of the current tensor
  kMovingAverageMinMax,  // exponential moving average of the batches' min/max
  kMse,                  // clipping that minimises ||x - Q(x)||^2 (grid search)
  kPercentile,           // |x| at a percentile
  kAbsMean,              // scale = mean |x| (BitNet b1.58's ternary weights)
};

struct QuantizerConfig {
  Format format = Format::kInt;
  int bits = 8;
  // kInt: zero point 0 (symmetric) or a zero point from the observed range.
  bool symmetric = true;
  // Symmetric kInt: [-2^(b-1), 2^(b-1) - 1] when signed, else [0, 2^b - 1]
  // (activations after ReLU; PACT is always unsigned).
  bool is_signed = true;
  Granularity granularity = Granularity::kPerTensor;
  // kPerGroup: consecutive elements of the last dimension per scale (weights
  // are quantized as [out, fan_in]).
  int64_t group_size = 0;
  Estimator estimator = Estimator::kSte;
  Observer observer = Observer::kMinMax;
  double averaging_constant = 0.01;  // kMovingAverageMinMax
  double percentile = 99.99;         // kPercentile, in (0, 100]
  int64_t hadamard_block = 128;      // kQuest: at most this, a power of two dividing the row
  double pact_init = 0.0;            // kPact: initial alpha (0: the first batch's max)
  // Weights: oscillation freezing (OFQ's annealing as Nagel et al. 2022 track
  // it). Each element's switches of integer level are tracked; an element
  // whose moving frequency of oscillation (a switch reversing the previous
  // one) exceeds freeze_threshold is frozen at the rounded moving average of
  // its level: its forward value stays there and its weight gets no
  // gradient. 0: off.
  double freeze_threshold = 0.0;
  double oscillation_momentum = 0.01;
  // Training forwards before freezing may start (the tracking runs from the
  // first): OFQ anneals at the end of training, and freezing from the start
  // froze 69% of a GPT's weights during warm-up (docs/training_methods.md).
  int64_t freeze_start = 0;
  // kDkm: the soft assignment's temperature, relative to the weights' standard
  // deviation at the first forward; the k-means iterations per forward (stopping early once the
  // centroids move less than 1e-6 std); eDKM's uniquification (the
  // attention map over the distinct fp16 values of the weights, not every
  // weight).
  double dkm_temperature = 0.05;
  int64_t dkm_iters = 5;
  bool dkm_unique = true;
  // Ternary weights: Tequila's dead-zone bias (see qat/fake_quantizer.h).
  bool dead_zone_bias = false;
  double dead_zone_lambda = 1e-3;  // initial value of the learned per-channel lambda
};

// Throws (LOWBIT_CHECK) naming `where`, the field and the value seen.
void CheckQuantizerConfig(const QuantizerConfig& c, const std::string& where);

// The integer grid [qmin, qmax] of an integer-like format (kInt, kTernary;
// kBinary is {0, 1} shifted, see fake_quantizer.cpp).
std::pair<int64_t, int64_t> IntRange(const QuantizerConfig& c);

bool IsMiniFloat(Format f);
// "int4-sym-per_channel-lsq" and the like, for logs and consistency checks.
std::string ToString(const QuantizerConfig& c);

}  // namespace lowbit::qat
