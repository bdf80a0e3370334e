#include "lowbit/kernels/cpu/optim8bit.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/kernels/cpu/internal/optim8bit_avx2.h"
#include "lowbit/kernels/cpu/quantize.h"

namespace lowbit::kernels::cpu {
namespace {

// Elements per parallel_for task.
constexpr int64_t kGrain = int64_t{1} << 15;

void EncodeBlock(const float* x, int64_t n, const DynamicCode& code, float inv, uint8_t* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<uint8_t>(kernels::internal::Encode(code, x[j] * inv));
}

void Decode(const uint8_t* codes, int64_t n, const DynamicCode& code, float absmax, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = code.values[codes[j]] * absmax;
}

#include "lowbit/kernels/cpu/internal/optim8bit_loops.h"

}  // namespace

bool BuildDynamicCode(bool is_signed, DynamicCode* out) {
  std::vector<double> data;
  for (int i = 0; i < 7; ++i) {
    const int bins = is_signed ? (1 << i) : (1 << (i + 1));
    const double scale = std::pow(10.0, i - 6);
    for (int k = 0; k < bins; ++k) {
      const double mean = 0.1 + 0.9 * (k + 0.5) / bins;  // midpoint of bin k of linspace(0.1, 1, bins + 1)
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0);
  data.push_back(1.0);
  if (data.size() != 256) return false;
  std::sort(data.begin(), data.end());
  // The table is the float formula the AVX2 decoder computes; it must be
  // sorted and agree with the definition above to a few ulp.
  for (int k = 0; k < 256; ++k) {
    out->values[k] = kernels::internal::DynamicValue(is_signed, k);
    if (std::fabs(out->values[k] - data[k]) > 4 * std::numeric_limits<float>::epsilon() * std::fabs(data[k])) return false;
    if (k > 0 && !(out->values[k] > out->values[k - 1])) return false;
  }
  out->is_signed = is_signed ? 1 : 0;
  // mids[k] splits values[k] and values[k + 1]; mids[255] = +inf ends the line.
  float mids[256];
  for (int k = 0; k < 255; ++k) mids[k] = 0.5f * (out->values[k] + out->values[k + 1]);
  mids[255] = std::numeric_limits<float>::infinity();
  const float* mids_end = mids + 255;
  const float inf = std::numeric_limits<float>::infinity();
  for (int sign = 0; sign < 2; ++sign) {
    for (int32_t c = 0; c < kCodeCells; ++c) {
      const uint32_t key = static_cast<uint32_t>(c + (kCellLowExponent << kCellMantissaBits))
                           << (23 - kCellMantissaBits);
      const float lo = FloatFromBits(key);
      const float hi = FloatFromBits(key | ((1u << (23 - kCellMantissaBits)) - 1));
      const bool first = c == 0, last = c == kCodeCells - 1;
      const float lowest = sign == 0 ? (first ? 0.0f : lo) : (last ? -inf : -hi);
      const float highest = sign == 0 ? (last ? inf : hi) : (first ? 0.0f : -lo);
      const float* below = std::lower_bound(static_cast<const float*>(mids), mids_end, lowest);  // first mid >= lowest
      const float* inside = std::upper_bound(static_cast<const float*>(mids), mids_end, highest);  // first mid > highest
      if (inside - below > 1) return false;
      uint32_t threshold = kNoMidpoint;
      if (inside - below == 1) {
        const uint32_t mid_bits = kernels::FloatBits(*below);
        // A midpoint inside the cell shares its sign, exponent and top mantissa bits.
        if (static_cast<uint32_t>(kernels::internal::CellOf(mid_bits)) != static_cast<uint32_t>(sign * kCodeCells + c)) {
          return false;
        }
        threshold = kernels::internal::OrderedLow16(mid_bits);
      }
      out->cells[sign * kCodeCells + c] = (static_cast<uint32_t>(below - mids) << 17) | threshold;
    }
  }
  return true;
}

void QuantizeDynamic(const float* x, int64_t n, int64_t block, const DynamicCode& code, float* absmax,
                     uint8_t* codes) {
  BlockAbsMax(x, n, block, absmax);
  if (internal::HaveAvx2()) {
    internal::EncodeBlocksAvx2(x, n, block, code, absmax, codes);
  } else {
    EncodeBlocks(x, n, block, code, absmax, codes);
  }
}

void DequantizeDynamic(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                       const DynamicCode& code, float* out) {
  if (internal::HaveAvx2()) {
    internal::DecodeBlocksAvx2(codes, absmax, n, block, code, out);
  } else {
    DecodeBlocks(codes, absmax, n, block, code, out);
  }
}

bool OptimizerStep8bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                       uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                       const DynamicCode& signed_code, const DynamicCode& unsigned_code) {
  if (internal::HaveAvx2()) {
    return internal::OptimizerStep8bitAvx2(a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code,
                                           unsigned_code);
  }
  return RunStep8bit(a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code, unsigned_code);
}

bool OptimizerStep32bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v) {
  if (internal::HaveAvx2()) return internal::OptimizerStep32bitAvx2(a, p, g, n, m, v);
  return RunStep32bit(a, p, g, n, m, v);
}

}  // namespace lowbit::kernels::cpu
