// AVX2 loops of the compression kernels; see cpu/internal/compress_avx2.h.
// Built with -ffp-contract=off: every float operation below is the baseline
// loop's, in the same order, so results match it bit for bit. AVX2 is enabled
// by the pragma after the includes, not for the whole file, so the shared
// inline helpers (quantize_math.h, counter_rng.h) keep the baseline target:
// the linker may keep this file's copy of them for every caller.
#include "lowbit/kernels/cpu/internal/compress_avx2.h"

#include <immintrin.h>

#include "lowbit/kernels/internal/counter_rng.h"
#include "lowbit/kernels/internal/quantize_math.h"

#pragma GCC target("avx2")

namespace lowbit::kernels::cpu::internal {
namespace {

inline __m256 Abs(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }

inline __m256i Hash32x8(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846CA68Bu)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

// RoundingNoiseWithSeed(seed, j .. j + 15) for even j, in element order: one
// hash per pair, its low half for the even element, its high half for the odd.
inline void Noise16(__m256i seed, uint32_t j, __m256* first, __m256* second) {
  const __m256i pair = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(j >> 1)),
                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i h =
      Hash32x8(_mm256_xor_si256(seed, _mm256_mullo_epi32(pair, _mm256_set1_epi32(static_cast<int>(0x9E3779B1u)))));
  const __m256i low = _mm256_and_si256(h, _mm256_set1_epi32(0xFFFF));
  const __m256i high = _mm256_srli_epi32(h, 16);
  // Interleave within 128-bit lanes: (l0 h0 l1 h1 | l4 h4 l5 h5), (l2 h2 l3 h3 | l6 h6 l7 h7),
  // then put the halves in order.
  const __m256i a = _mm256_unpacklo_epi32(low, high), b = _mm256_unpackhi_epi32(low, high);
  const __m256i e0 = _mm256_permute2x128_si256(a, b, 0x20), e1 = _mm256_permute2x128_si256(a, b, 0x31);
  const __m256 scale = _mm256_set1_ps(1.0f / 65536.0f);
  *first = _mm256_mul_ps(_mm256_cvtepi32_ps(e0), scale);
  *second = _mm256_mul_ps(_mm256_cvtepi32_ps(e1), scale);
}

}  // namespace

namespace {

// max |v| and the lane sums of |v| or v^2 over v = g (+ e): with kStore, v
// is also written to x (error feedback's x = g + e); without, v is g.
template <bool kStore>
float AbsMaxRun(const float* g, const float* e, float* x, int64_t len) {
  __m256 m = _mm256_setzero_ps();
  __m256 nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 v = _mm256_loadu_ps(g + i);
    if (e != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(e + i));
    if (kStore) _mm256_storeu_ps(x + i, v);
    m = _mm256_max_ps(m, Abs(v));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = 0.0f;
  for (float l : lanes) r = l > r ? l : r;
  bool any_nan = _mm256_movemask_ps(nan) != 0;
  for (; i < len; ++i) {
    const float v = e != nullptr ? g[i] + e[i] : g[i];
    if (kStore) x[i] = v;
    const float a = v < 0.0f ? -v : v;
    r = a > r ? a : r;
    any_nan |= v != v;
  }
  return any_nan ? __builtin_nanf("") : r;
}

template <bool kStore>
void LaneSumsRun(const float* g, const float* e, float* x, int64_t len, int p, float lanes[8]) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t full = len / 8 * 8;
  for (int64_t i = 0; i < full; i += 8) {
    __m256 v = _mm256_loadu_ps(g + i);
    if (e != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(e + i));
    if (kStore) _mm256_storeu_ps(x + i, v);
    acc = _mm256_add_ps(acc, p == 1 ? Abs(v) : _mm256_mul_ps(v, v));
  }
  _mm256_storeu_ps(lanes, acc);
  for (int64_t i = full; i < len; ++i) {
    const float v = e != nullptr ? g[i] + e[i] : g[i];
    if (kStore) x[i] = v;
    lanes[i % 8] += p == 1 ? (v < 0.0f ? -v : v) : v * v;
  }
}

}  // namespace

float AbsMaxAvx2(const float* x, int64_t len) { return AbsMaxRun<false>(x, nullptr, nullptr, len); }

float AddAbsMaxAvx2(const float* g, const float* e, float* x, int64_t len) {
  return AbsMaxRun<true>(g, e, x, len);
}

void LaneSumsAvx2(const float* x, int64_t len, int p, float lanes[8]) {
  LaneSumsRun<false>(x, nullptr, nullptr, len, p, lanes);
}

void AddLaneSumsAvx2(const float* g, const float* e, float* x, int64_t len, int p, float lanes[8]) {
  LaneSumsRun<true>(g, e, x, len, p, lanes);
}

void QuantizeRunAvx2(const float* x, int64_t begin, int64_t len, float s, int bits, int levels, bool stochastic,
                     uint64_t key, int64_t index_base, uint8_t* codes) {
  const __m256 inv = _mm256_set1_ps(kernels::internal::InvScale(s));
  const __m256 half = _mm256_set1_ps(0.5f * static_cast<float>(levels));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 top = _mm256_set1_ps(static_cast<float>(levels));
  const __m256 zero = _mm256_setzero_ps();
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t seed_high = -1;
  __m256i seed = _mm256_setzero_si256();
  for (int64_t c = begin; c < begin + len; c += 32) {
    const int64_t j0 = index_base + c;
    if (stochastic && (((j0 + 31) >> 32) != (j0 >> 32))) {
      // The run of 32 crosses a 2^32 index boundary: element by element.
      uint32_t qs[32];
      for (int k = 0; k < 32; ++k) {
        qs[k] = kernels::internal::QuantizeOne(x[c + k], kernels::internal::InvScale(s), 0.5f * static_cast<float>(levels),
                                               levels, RoundingNoise(key, j0 + k));
      }
      for (int g = 0; g < 4; ++g) kernels::internal::PackGroup(qs + 8 * g, bits, codes + (c / 8 + g) * bits);
      continue;
    }
    if (stochastic && (j0 >> 32) != seed_high) {
      seed_high = j0 >> 32;
      seed = _mm256_set1_epi32(static_cast<int>(RoundingSeed(key, j0)));
    }
    __m256 u[4];
    if (stochastic && (j0 & 1) == 0) {
      Noise16(seed, static_cast<uint32_t>(j0), &u[0], &u[1]);
      Noise16(seed, static_cast<uint32_t>(j0 + 16), &u[2], &u[3]);
    } else if (stochastic) {  // an odd start: the pairs straddle the vectors
      alignas(32) float noise[32];
      for (int k = 0; k < 32; ++k) noise[k] = RoundingNoiseWithSeed(static_cast<uint32_t>(_mm256_extract_epi32(seed, 0)), j0 + k);
      for (int v = 0; v < 4; ++v) u[v] = _mm256_load_ps(noise + 8 * v);
    } else {
      for (int v = 0; v < 4; ++v) u[v] = _mm256_set1_ps(0.5f);
    }
    __m256i q[4];
    for (int v = 0; v < 4; ++v) {
      const __m256 xv = _mm256_loadu_ps(x + c + 8 * v);
      __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(xv, inv), one), half), u[v]);
      t = _mm256_min_ps(_mm256_max_ps(t, zero), top);  // NaN -> 0 (max returns its second operand)
      q[v] = _mm256_cvttps_epi32(t);
    }
    const __m256i b = _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3])), order);
    if (bits == 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + c), b);
    } else {
      const __m256i pairs = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x1001));  // q[2j] + 16 q[2j + 1]
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + c / 2), _mm256_castsi256_si128(packed));
    }
  }
}

void DequantizeRunAvx2(const uint8_t* codes, int64_t begin, int64_t len, float s, int bits, int levels, float* out,
                       int mode) {
  const __m256 step = _mm256_set1_ps(kernels::internal::StepOf(s, levels));
  const __m256 sv = _mm256_set1_ps(s);
  auto emit = [&](__m128i codes8, float* o) {  // the low 8 bytes of codes8: 8 codes
    const __m256 v = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes8)), step), sv);
    _mm256_storeu_ps(o, mode == 0 ? v : mode == 1 ? _mm256_add_ps(_mm256_loadu_ps(o), v)
                                                  : _mm256_sub_ps(_mm256_loadu_ps(o), v));
  };
  for (int64_t c = begin; c < begin + len; c += 16) {
    __m128i bytes;
    if (bits == 8) {
      bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c));
    } else {
      const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + c / 2));
      const __m128i low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
      const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
      bytes = _mm_unpacklo_epi8(low, high);
    }
    emit(bytes, out + c);
    emit(_mm_srli_si128(bytes, 8), out + c + 8);
  }
}

void PackSignsResidualAvx2(float* x, int64_t nbytes, float s, uint8_t* bits) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 pos = _mm256_set1_ps(s);
  const __m256 neg = _mm256_set1_ps(-s);
  for (int64_t j = 0; j < nbytes; ++j) {
    const __m256 v = _mm256_loadu_ps(x + 8 * j);
    const __m256 ge = _mm256_cmp_ps(v, zero, _CMP_GE_OQ);
    bits[j] = static_cast<uint8_t>(_mm256_movemask_ps(ge));
    _mm256_storeu_ps(x + 8 * j, _mm256_sub_ps(v, _mm256_blendv_ps(neg, pos, ge)));
  }
}

void PackSignsAvx2(const float* x, int64_t nbytes, uint8_t* bits) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < nbytes; ++j) {
    bits[j] = static_cast<uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * j), zero, _CMP_GE_OQ)));
  }
}

void UnpackSignsAvx2(const uint8_t* bits, int64_t nbytes, float s, float* out, bool accumulate) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 pos = _mm256_set1_ps(s);
  const __m256 neg = _mm256_set1_ps(-s);
  for (int64_t j = 0; j < nbytes; ++j) {
    const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits[j]), lane_bit), lane_bit);
    const __m256 v = _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(set));
    float* o = out + 8 * j;
    _mm256_storeu_ps(o, accumulate ? _mm256_add_ps(_mm256_loadu_ps(o), v) : v);
  }
}

void UnpackSignsSumAvx2(const uint8_t* const* bits, const float* s, int count, int64_t nbytes, float divisor,
                        float* out) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 div = _mm256_set1_ps(divisor);
  for (int64_t j = 0; j < nbytes; ++j) {
    __m256 acc = _mm256_setzero_ps();
    for (int r = 0; r < count; ++r) {
      const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits[r][j]), lane_bit), lane_bit);
      const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-s[r]), _mm256_set1_ps(s[r]), _mm256_castsi256_ps(set));
      acc = r == 0 ? v : _mm256_add_ps(acc, v);
    }
    _mm256_storeu_ps(out + 8 * j, divisor == 1.0f ? acc : _mm256_div_ps(acc, div));
  }
}

int64_t CountAtLeastAvx2(const float* x, int64_t n, float threshold) {
  const __m256 t = _mm256_set1_ps(threshold);
  int64_t count = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(Abs(_mm256_loadu_ps(x + i)), t, _CMP_GE_OQ)));
  }
  for (; i < n; ++i) count += (x[i] < 0.0f ? -x[i] : x[i]) >= threshold;
  return count;
}

int64_t GatherAtLeastAvx2(const float* x, int64_t n, float threshold, int64_t cap, int32_t* idx, float* val) {
  const __m256 t = _mm256_set1_ps(threshold);
  int64_t count = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(Abs(_mm256_loadu_ps(x + i)), t, _CMP_GE_OQ)));
    if (mask == 0) continue;
    if (count + __builtin_popcount(mask) > cap) return -1;
    while (mask != 0) {
      const int k = __builtin_ctz(mask);
      mask &= mask - 1;
      idx[count] = static_cast<int32_t>(i + k);
      val[count] = x[i + k];
      ++count;
    }
  }
  for (; i < n; ++i) {
    if ((x[i] < 0.0f ? -x[i] : x[i]) >= threshold) {
      if (count == cap) return -1;
      idx[count] = static_cast<int32_t>(i);
      val[count] = x[i];
      ++count;
    }
  }
  return count;
}

}  // namespace lowbit::kernels::cpu::internal
