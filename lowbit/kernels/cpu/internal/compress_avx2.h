// The compression kernels' inner loops again for AVX2 (compress_avx2.cpp,
// compiled with -mavx2 and without FMA contraction), chosen at run time by the
// loops of kernels/cpu/{quantize,sign,topk}.cpp when HaveAvx2() is true. Each
// computes exactly what the baseline loop it replaces computes, bit for bit
// (the same operations in the same order: lane sums use the 8-lane order of
// LaneSums below), so results never depend on the CPU a rank runs on. On
// targets without AVX2, compress_avx2_stub.cpp is built and never called.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu::internal {

bool HaveAvx2();  // defined with the optimizer loops (optim8bit_avx2.cpp)

// max |x[i]| over len elements, NaN if any element is NaN.
float AbsMaxAvx2(const float* x, int64_t len);
// lanes[k] = sum over i = k (mod 8) of |x[i]| (p = 1) or x[i]^2 (p = 2), in
// index order; see LaneSums.
void LaneSumsAvx2(const float* x, int64_t len, int p, float lanes[8]);
// Codes of elements [begin, begin + len) of a block with scale s: len a
// multiple of 32, begin a multiple of 8, bits 4 or 8. Noise index: index_base + i.
void QuantizeRunAvx2(const float* x, int64_t begin, int64_t len, float s, int bits, int levels, bool stochastic,
                     uint64_t key, int64_t index_base, uint8_t* codes);
// Decodes [begin, begin + len) (len a multiple of 16, begin of 8) into out:
// mode 0 writes the value v, 1 adds it (out + v), 2 subtracts it (out - v).
void DequantizeRunAvx2(const uint8_t* codes, int64_t begin, int64_t len, float s, int bits, int levels, float* out,
                       int mode);
// x[i] = g[i] + e[i] (e may be null: zero) for len elements; returns max |x|,
// NaN if any x is NaN.
float AddAbsMaxAvx2(const float* g, const float* e, float* x, int64_t len);
// x[i] = g[i] + e[i] (e may be null) and LaneSumsAvx2 of x.
void AddLaneSumsAvx2(const float* g, const float* e, float* x, int64_t len, int p, float lanes[8]);
// Sign bits of 8 * nbytes elements of x, and x[i] -= (bit ? s : -s).
void PackSignsResidualAvx2(float* x, int64_t nbytes, float s, uint8_t* bits);
// Sign bits of 8 * nbytes elements.
void PackSignsAvx2(const float* x, int64_t nbytes, uint8_t* bits);
// out[i] (+)= bit ? s : -s for 8 * nbytes elements.
void UnpackSignsAvx2(const uint8_t* bits, int64_t nbytes, float s, float* out, bool accumulate);
// out[8j + k] = (sum over r in order of (bit k of bits[r][j] ? s[r] : -s[r])) / divisor,
// for j < nbytes.
void UnpackSignsSumAvx2(const uint8_t* const* bits, const float* s, int count, int64_t nbytes, float divisor,
                        float* out);
int64_t CountAtLeastAvx2(const float* x, int64_t n, float threshold);
// Every i with |x[i]| >= threshold, in order, into idx/val; returns the count,
// or -1 (having stopped) when there are more than `cap`.
int64_t GatherAtLeastAvx2(const float* x, int64_t n, float threshold, int64_t cap, int32_t* idx, float* val);

// The baseline lane sums (the order LaneSumsAvx2 keeps) and their reduction.
inline void LaneSums(const float* x, int64_t len, int p, float lanes[8]) {
  for (int k = 0; k < 8; ++k) lanes[k] = 0.0f;
  for (int64_t i = 0; i < len; ++i) {
    const float v = x[i];
    lanes[i % 8] += p == 1 ? (v < 0.0f ? -v : v) : v * v;
  }
}
inline float ReduceLanes(const float lanes[8]) {
  return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

}  // namespace lowbit::kernels::cpu::internal
