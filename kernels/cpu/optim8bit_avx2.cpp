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

// Scalar loads: on the AMD EPYC measured, faster than vgatherdps.
void Decode(const uint8_t* codes, int64_t n, const float* values, float absmax, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = values[codes[j]] * absmax;
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

bool OptimizerStep32bitAvx2(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v) {
  return RunStep32bit(a, p, g, n, m, v);
}

}  // namespace internal
}  // namespace lowbit::kernels::cpu
