#include "lowbit/kernels/cpu/optim8bit.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/kernels/cpu/quantize.h"

namespace lowbit::kernels::cpu {
namespace {

// Elements per parallel_for task.
constexpr int64_t kGrain = int64_t{1} << 15;

float FromBits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// max |x| over a block as the bits of |x|: for non-negative floats, the
// integer order is the float order, and integer max vectorises.
uint32_t AbsMaxBits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t a = internal::FloatBits(x[j]) & 0x7FFFFFFFu;
    m = a > m ? a : m;
  }
  return m;
}

void Decode(const uint8_t* codes, int64_t n, const float* values, float absmax, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = values[codes[j]] * absmax;
}

void EncodeBlock(const float* x, int64_t n, const DynamicCode& code, float inv, uint8_t* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<uint8_t>(internal::Encode(code, x[j] * inv));
}

// Normalises a block by its absmax, then encodes it; returns the absmax.
float RequantizeBlock(const float* x, int64_t n, const DynamicCode& code, uint8_t* out) {
  const float absmax = FromBits(AbsMaxBits(x, n));
  EncodeBlock(x, n, code, internal::InvAbsMax(absmax), out);
  return absmax;
}

template <OptimRule R, bool kM, bool kV>
void Step8bitBlocks(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block, uint8_t* m_codes,
                    float* m_absmax, uint8_t* v_codes, float* v_absmax, const DynamicCode& signed_code,
                    const DynamicCode& unsigned_code, int64_t b0, int64_t b1) {
  alignas(64) float mbuf[kMaxOptimBlock];
  alignas(64) float vbuf[kMaxOptimBlock];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t begin = b * block;
    const int64_t len = std::min(block, n - begin);
    float* pb = p + begin;
    const float* gb = g + begin;
    if (kM) Decode(m_codes + begin, len, signed_code.values, m_absmax[b], mbuf);
    if (kV) Decode(v_codes + begin, len, unsigned_code.values, v_absmax[b], vbuf);
    for (int64_t j = 0; j < len; ++j) {
      float m = kM ? mbuf[j] : 0.0f;
      float v = kV ? vbuf[j] : 0.0f;
      pb[j] = internal::UpdateOne<R>(a, kM, pb[j], internal::FiniteOrZero(gb[j]) * a.grad_scale, m, v);
      if (kM) mbuf[j] = m;
      if (kV) vbuf[j] = v;
    }
    if (kM) m_absmax[b] = RequantizeBlock(mbuf, len, signed_code, m_codes + begin);
    if (kV) v_absmax[b] = RequantizeBlock(vbuf, len, unsigned_code, v_codes + begin);
  }
}

template <OptimRule R, bool kM, bool kV>
void Step32bitRange(const OptimStepArgs& a, float* p, const float* g, float* m_state, float* v_state, int64_t i0,
                    int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    float m = kM ? m_state[i] : 0.0f;
    float v = kV ? v_state[i] : 0.0f;
    p[i] = internal::UpdateOne<R>(a, kM, p[i], internal::FiniteOrZero(g[i]) * a.grad_scale, m, v);
    if (kM) m_state[i] = m;
    if (kV) v_state[i] = v;
  }
}

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
  for (int k = 0; k < 256; ++k) out->values[k] = static_cast<float>(data[k]);
  for (int k = 0; k < 255; ++k) out->mids[k] = 0.5f * (out->values[k] + out->values[k + 1]);
  out->mids[255] = std::numeric_limits<float>::infinity();
  const float* mids_end = out->mids + 255;
  const float inf = std::numeric_limits<float>::infinity();
  for (int sign = 0; sign < 2; ++sign) {
    for (int32_t c = 0; c < kCodeCells; ++c) {
      const uint32_t key = static_cast<uint32_t>(c + (kCellLowExponent << kCellMantissaBits))
                           << (23 - kCellMantissaBits);
      const float lo = FromBits(key);
      const float hi = FromBits(key | ((1u << (23 - kCellMantissaBits)) - 1));
      const bool first = c == 0, last = c == kCodeCells - 1;
      const float lowest = sign == 0 ? (first ? 0.0f : lo) : (last ? -inf : -hi);
      const float highest = sign == 0 ? (last ? inf : hi) : (first ? 0.0f : -lo);
      const float* below = std::lower_bound(static_cast<const float*>(out->mids), mids_end, lowest);       // first mid >= lowest
      const float* inside = std::upper_bound(static_cast<const float*>(out->mids), mids_end, highest);     // first mid > highest
      if (inside - below > 1) return false;
      out->cells[sign * kCodeCells + c] = static_cast<uint8_t>(below - out->mids);
    }
  }
  return true;
}

void QuantizeDynamic(const float* x, int64_t n, int64_t block, const DynamicCode& code, float* absmax,
                     uint8_t* codes) {
  BlockAbsMax(x, n, block, absmax);
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      EncodeBlock(x + begin, std::min(block, n - begin), code, internal::InvAbsMax(absmax[b]), codes + begin);
    }
  });
}

void DequantizeDynamic(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                       const DynamicCode& code, float* out) {
  const int64_t nblocks = (n + block - 1) / block;
  at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block;
      Decode(codes + begin, std::min(block, n - begin), code.values, absmax[b], out + begin);
    }
  });
}

bool OptimizerStep8bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                       uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                       const DynamicCode& signed_code, const DynamicCode& unsigned_code) {
  if (block < 1 || block > kMaxOptimBlock) return false;
  const int64_t nblocks = (n + block - 1) / block;
  return internal::DispatchRule(a.rule, m_codes != nullptr, v_codes != nullptr, [&](auto rule, auto has_m, auto has_v) {
    at::parallel_for(0, nblocks, std::max<int64_t>(1, kGrain / block), [&](int64_t b0, int64_t b1) {
      Step8bitBlocks<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>(
          a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code, unsigned_code, b0, b1);
    });
  });
}

bool OptimizerStep32bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v) {
  return internal::DispatchRule(a.rule, m != nullptr, v != nullptr, [&](auto rule, auto has_m, auto has_v) {
    at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
      Step32bitRange<decltype(rule)::value, decltype(has_m)::value, decltype(has_v)::value>(a, p, g, m, v, i0, i1);
    });
  });
}

}  // namespace lowbit::kernels::cpu
