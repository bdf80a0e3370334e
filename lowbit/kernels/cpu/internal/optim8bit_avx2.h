// The fused optimizer steps built for AVX2 (optim8bit_avx2.cpp, compiled with
// -mavx2 and without FMA contraction, so it rounds exactly as the baseline
// build), chosen at run time when the CPU has AVX2. On other targets
// optim8bit_avx2_stub.cpp is built instead and HaveAvx2() is false.
#pragma once
#include <cstdint>

#include "lowbit/kernels/internal/optim_math.h"

namespace lowbit::kernels::cpu::internal {

bool HaveAvx2();
bool OptimizerStep8bitAvx2(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                           uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                           const DynamicCode& signed_code, const DynamicCode& unsigned_code);
// codes[i] = Encode(x[i] / absmax[i / block]).
bool EncodeBlocksAvx2(const float* x, int64_t n, int64_t block, const DynamicCode& code, const float* absmax,
                      uint8_t* codes);
bool DecodeBlocksAvx2(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, const DynamicCode& code,
                      float* out);
bool OptimizerStep32bitAvx2(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v);

}  // namespace lowbit::kernels::cpu::internal
