#include "lowbit/qat/quantizer_config.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"

namespace lowbit::qat {

namespace {

const char* FormatName(Format f) {
  switch (f) {
    case Format::kInt: return "int";
    case Format::kTernary: return "ternary";
    case Format::kBinary: return "binary";
    case Format::kFp8E4M3: return "fp8_e4m3";
    case Format::kFp8E5M2: return "fp8_e5m2";
    case Format::kFp4E2M1: return "fp4_e2m1";
    case Format::kPalette: return "palette";
  }
  return "?";
}

const char* EstimatorName(Estimator e) {
  switch (e) {
    case Estimator::kSte: return "ste";
    case Estimator::kClippedSte: return "clipped_ste";
    case Estimator::kLsq: return "lsq";
    case Estimator::kLsqPlus: return "lsq+";
    case Estimator::kPact: return "pact";
    case Estimator::kQuest: return "quest";
    case Estimator::kStochastic: return "stochastic";
    case Estimator::kStatsQ: return "statsq";
    case Estimator::kDkm: return "dkm";
  }
  return "?";
}

const char* GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor: return "per_tensor";
    case Granularity::kPerChannel: return "per_channel";
    case Granularity::kPerGroup: return "per_group";
  }
  return "?";
}

}  // namespace

bool IsMiniFloat(Format f) { return f == Format::kFp8E4M3 || f == Format::kFp8E5M2 || f == Format::kFp4E2M1; }

void CheckQuantizerConfig(const QuantizerConfig& c, const std::string& where) {
  LOWBIT_CHECK(c.bits >= 1 && c.bits <= 8, where, ": bits must be in [1, 8], got ", c.bits);
  LOWBIT_CHECK(
      c.format != Format::kInt || c.estimator == Estimator::kQuest || c.bits >= 2 || !c.symmetric || !c.is_signed,
      where, ": a signed symmetric 1-bit integer grid is {-1, 0}; use Format::kBinary for {-s, s}");
  LOWBIT_CHECK(c.granularity != Granularity::kPerGroup || c.group_size >= 1, where,
               ": group_size must be >= 1 for per-group scales, got ", c.group_size);
  LOWBIT_CHECK(c.averaging_constant > 0 && c.averaging_constant <= 1, where,
               ": averaging_constant must be in (0, 1], got ", c.averaging_constant);
  LOWBIT_CHECK(c.percentile > 0 && c.percentile <= 100, where, ": percentile must be in (0, 100], got ", c.percentile);
  LOWBIT_CHECK(c.pact_init >= 0, where, ": pact_init must be >= 0 (0: first batch), got ", c.pact_init);
  const bool int_like = c.format == Format::kInt || c.format == Format::kTernary;
  LOWBIT_CHECK(c.format != Format::kPalette || c.estimator == Estimator::kDkm, where,
               ": a palette is learned by dkm; got estimator ", EstimatorName(c.estimator));
  LOWBIT_CHECK(c.freeze_threshold >= 0 && c.freeze_threshold <= 1, where,
               ": freeze_threshold must be in [0, 1] (0: off), got ", c.freeze_threshold);
  LOWBIT_CHECK(c.freeze_start >= 0, where, ": freeze_start must be >= 0, got ", c.freeze_start);
  LOWBIT_CHECK(c.oscillation_momentum > 0 && c.oscillation_momentum <= 1, where,
               ": oscillation_momentum must be in (0, 1], got ", c.oscillation_momentum);
  LOWBIT_CHECK(c.freeze_threshold == 0 || (int_like && c.estimator != Estimator::kQuest &&
                                           c.estimator != Estimator::kStochastic && c.estimator != Estimator::kPact),
               where, ": freezing needs an int or ternary weight grid (not quest, stochastic or pact), got ",
               ToString(c));
  LOWBIT_CHECK(!c.dead_zone_bias || c.format == Format::kTernary, where,
               ": dead_zone_bias is for ternary weights, got ", ToString(c));
  LOWBIT_CHECK(c.dead_zone_lambda >= 0 && std::isfinite(c.dead_zone_lambda), where,
               ": dead_zone_lambda must be >= 0, got ", c.dead_zone_lambda);
  switch (c.estimator) {
    case Estimator::kLsq:
    case Estimator::kLsqPlus:
      LOWBIT_CHECK(int_like, where, ": ", EstimatorName(c.estimator), " needs an int or ternary format, got ",
                   FormatName(c.format));
      LOWBIT_CHECK(c.symmetric, where, ": ", EstimatorName(c.estimator),
                   " learns its own scale (and offset); set symmetric = true");
      break;
    case Estimator::kPact:
      LOWBIT_CHECK(c.format == Format::kInt && c.granularity == Granularity::kPerTensor, where,
                   ": pact quantizes activations on one unsigned int grid (int format, per tensor), got ",
                   FormatName(c.format), " ", GranularityName(c.granularity));
      break;
    case Estimator::kQuest:
      LOWBIT_CHECK(c.format == Format::kInt, where, ": quest needs the int format (its own symmetric grid), got ",
                   FormatName(c.format));
      LOWBIT_CHECK(c.hadamard_block >= 1 && (c.hadamard_block & (c.hadamard_block - 1)) == 0, where,
                   ": hadamard_block must be a power of two, got ", c.hadamard_block);
      break;
    case Estimator::kStochastic:
      LOWBIT_CHECK(c.format != Format::kBinary, where, ": stochastic rounding is not defined for binary");
      break;
    case Estimator::kDkm:
      LOWBIT_CHECK(c.format == Format::kPalette && c.granularity == Granularity::kPerTensor, where,
                   ": dkm learns one palette per tensor (format palette, per tensor), got ", ToString(c));
      LOWBIT_CHECK(c.bits >= 1 && c.bits <= 8, where, ": dkm bits must be in [1, 8], got ", c.bits);
      LOWBIT_CHECK(c.dkm_temperature > 0 && std::isfinite(c.dkm_temperature), where,
                   ": dkm_temperature must be > 0, got ", c.dkm_temperature);
      LOWBIT_CHECK(c.dkm_iters >= 1 && c.dkm_iters <= 100, where, ": dkm_iters must be in [1, 100], got ", c.dkm_iters);
      break;
    case Estimator::kStatsQ:
      LOWBIT_CHECK(c.format == Format::kInt && c.symmetric && c.is_signed && c.bits >= 2, where,
                   ": statsq is a signed symmetric int grid of >= 2 bits (its levels are half-integers), got ",
                   ToString(c));
      break;
    default:
      break;
  }
}

std::pair<int64_t, int64_t> IntRange(const QuantizerConfig& c) {
  switch (c.format) {
    case Format::kTernary: return {-1, 1};
    case Format::kBinary: return {0, 1};
    case Format::kPalette: return {0, (int64_t{1} << c.bits) - 1};  // centroid indices
    default: break;
  }
  if (c.estimator == Estimator::kPact || !c.is_signed) return {0, (int64_t{1} << c.bits) - 1};
  if (!c.symmetric) return {0, (int64_t{1} << c.bits) - 1};
  return {-(int64_t{1} << (c.bits - 1)), (int64_t{1} << (c.bits - 1)) - 1};
}

std::string ToString(const QuantizerConfig& c) {
  if (c.format == Format::kPalette) {
    return absl::StrCat("palette", c.bits, "-dkm-t", c.dkm_temperature, c.dkm_unique ? "-unique" : "");
  }
  std::string s = c.format == Format::kInt ? absl::StrCat("int", c.bits, c.symmetric ? "-sym" : "-affine",
                                                          c.is_signed ? "" : "-unsigned")
                                           : FormatName(c.format);
  absl::StrAppend(&s, "-", GranularityName(c.granularity));
  if (c.granularity == Granularity::kPerGroup) absl::StrAppend(&s, c.group_size);
  absl::StrAppend(&s, "-", EstimatorName(c.estimator));
  if (c.observer == Observer::kAbsMean) absl::StrAppend(&s, "-absmean");
  if (c.freeze_threshold > 0) absl::StrAppend(&s, "-freeze", c.freeze_threshold);
  if (c.dead_zone_bias) absl::StrAppend(&s, "-tequila");
  return s;
}

}  // namespace lowbit::qat
