// The fused optimizer steps for AVX2 CPUs: the loops of
// cpu/internal/optim8bit_loops.h, which the compiler vectorises (with
// gathers for the dequantization), and an explicit AVX2 encoder, which it
// does not find by itself. Bit-identical to the baseline build.
#include "lowbit/kernels/cpu/internal/optim8bit_avx2.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "lowbit/kernels/cpu/optim8bit.h"

namespace lowbit::kernels::cpu {
namespace {

constexpr int64_t kGrain = int64_t{1} << 15;

// kernels::internal::Encode, 8 lanes at a time: cell from the float's bits, the
// count of midpoints below the cell, one comparison with the next midpoint.
void EncodeBlock(const float* x, int64_t n, const DynamicCode& code, float inv, uint8_t* out) {
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i low = _mm256_set1_epi32(kCellLowExponent << kCellMantissaBits);
  const __m256i key_mask = _mm256_set1_epi32(0x7FFF);
  const __m256i last = _mm256_set1_epi32(kCodeCells - 1);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i per_sign = _mm256_set1_epi32(kCodeCells);
  const __m256i low_mask = _mm256_set1_epi32(0xFFFF);
  const __m256i threshold_mask = _mm256_set1_epi32(0x1FFFF);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv);
    const __m256i bits = _mm256_castps_si256(y);
    __m256i key = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 23 - kCellMantissaBits), key_mask), low);
    key = _mm256_min_epi32(_mm256_max_epi32(key, zero), last);
    const __m256i cell = _mm256_add_epi32(key, _mm256_and_si256(_mm256_srai_epi32(bits, 31), per_sign));
    const __m256i entry = _mm256_i32gather_epi32(reinterpret_cast<const int*>(code.cells), cell, 4);
    const __m256i low16 = _mm256_and_si256(_mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31)), low_mask);
    const __m256i above = _mm256_cmpgt_epi32(low16, _mm256_and_si256(entry, threshold_mask));  // all ones where x > mid
    const __m256i q = _mm256_sub_epi32(_mm256_srli_epi32(entry, 17), above);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(words, words));
  }
  for (; j < n; ++j) out[j] = static_cast<uint8_t>(kernels::internal::Encode(code, x[j] * inv));
}

// internal::DynamicValue for 8 codes at once, with the same float
// operations, times absmax: arithmetic instead of table loads (which the
// vectoriser can only gather or insert one by one).
void Decode(const uint8_t* codes, int64_t n, const DynamicCode& code, float absmax, float* out) {
  const bool is_signed = code.is_signed != 0;
  const __m256 scale = _mm256_set1_ps(absmax);
  const __m256 decades = _mm256_setr_ps(1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f, 1.0f);
  const __m256i zero_code = _mm256_set1_epi32(is_signed ? 127 : 0);
  const __m256i top_code = _mm256_set1_epi32(255);
  const __m256i exponent_mask = _mm256_set1_epi32(static_cast<int>(0xFF800000u));
  const __m256i decade_offset = _mm256_set1_epi32(is_signed ? 127 : 128);  // decade = e or e - 1
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
    const __m256i m = is_signed ? _mm256_abs_epi32(_mm256_sub_epi32(k, zero_code))
                                : _mm256_add_epi32(k, _mm256_set1_epi32(1));
    const __m256 mf = _mm256_cvtepi32_ps(m);
    const __m256i mf_bits = _mm256_castps_si256(mf);
    const __m256 bins = _mm256_castsi256_ps(_mm256_and_si256(mf_bits, exponent_mask));  // 2^floor(log2 m)
    // 1 / bins exactly (a power of two), so multiplying rounds as the scalar division does.
    const __m256 inv_bins = _mm256_castsi256_ps(
        _mm256_sub_epi32(_mm256_set1_epi32(254 << 23), _mm256_and_si256(mf_bits, exponent_mask)));
    const __m256 frac = _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(mf, bins), _mm256_set1_ps(0.5f)), inv_bins);
    const __m256 mid = _mm256_add_ps(_mm256_set1_ps(0.1f), _mm256_mul_ps(_mm256_set1_ps(0.9f), frac));
    const __m256i decade = _mm256_sub_epi32(_mm256_srli_epi32(mf_bits, 23), decade_offset);
    __m256 v = _mm256_mul_ps(_mm256_permutevar8x32_ps(decades, decade), mid);
    if (is_signed) {
      const __m256i below = _mm256_cmpgt_epi32(zero_code, k);
      v = _mm256_xor_ps(v, _mm256_and_ps(_mm256_castsi256_ps(below), _mm256_set1_ps(-0.0f)));
    }
    v = _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, zero_code)));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(1.0f), _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, top_code)));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(v, scale));
  }
  for (; j < n; ++j) out[j] = code.values[codes[j]] * absmax;
}

#include "lowbit/kernels/cpu/internal/optim8bit_loops.h"

}  // namespace

namespace internal {

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}

bool OptimizerStep8bitAvx2(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                           uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                           const DynamicCode& signed_code, const DynamicCode& unsigned_code) {
  return RunStep8bit(a, p, g, n, block, m_codes, m_absmax, v_codes, v_absmax, signed_code, unsigned_code);
}

bool EncodeBlocksAvx2(const float* x, int64_t n, int64_t block, const DynamicCode& code, const float* absmax,
                      uint8_t* codes) {
  EncodeBlocks(x, n, block, code, absmax, codes);
  return true;
}

bool DecodeBlocksAvx2(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, const DynamicCode& code,
                      float* out) {
  DecodeBlocks(codes, absmax, n, block, code, out);
  return true;
}

bool OptimizerStep32bitAvx2(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v) {
  return RunStep32bit(a, p, g, n, m, v);
}

}  // namespace internal
}  // namespace lowbit::kernels::cpu
