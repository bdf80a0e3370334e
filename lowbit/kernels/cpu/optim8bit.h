// CPU kernels of the 8-bit blockwise optimizers (Dettmers et al. 2022,
// "8-bit Optimizers via Block-wise Quantization"; bitsandbytes) and their
// fp32-state twin. A state tensor of n values is stored as n uint8 codes into
// a dynamic map (DynamicCode, kernels/internal/optim_math.h) and one fp32
// absmax per block of `block` values: value = map[code] * absmax. A fused
// step, per block: dequantize, update the parameter and the states
// (OptimStepArgs), take the states' new absmax, requantize to the nearest
// code. The CUDA twins are kernels/cuda/optim8bit.cuh; the ops layer
// kernels/optim8bit.h.
#pragma once
#include <cstdint>

#include "lowbit/kernels/internal/optim_math.h"

namespace lowbit::kernels::cpu {

// The dynamic map of bitsandbytes' create_dynamic_map(signed, 7, 8): for i =
// 0..6, the midpoints of 2^i (signed) or 2^(i+1) (unsigned) equal bins of
// [0.1, 1], times 10^(i-6), negated too when signed; plus 0 and 1; sorted.
// Returns false if the encoding cells do not resolve the map (see
// DynamicCode), which would be a bug.
bool BuildDynamicCode(bool is_signed, DynamicCode* out);

// codes[i] = Encode(x[i] / absmax[i / block]), absmax per block (NaN if the
// block has a NaN).
void QuantizeDynamic(const float* x, int64_t n, int64_t block, const DynamicCode& code, float* absmax,
                     uint8_t* codes);
void DequantizeDynamic(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                       const DynamicCode& code, float* out);

// One fused step of n parameters. m (signed map) and v (unsigned map) are
// null where the rule has no such state. Returns false for a rule and state
// combination that does not exist (the ops layer rules these out).
bool OptimizerStep8bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                       uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                       const DynamicCode& signed_code, const DynamicCode& unsigned_code);
bool OptimizerStep32bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v);

}  // namespace lowbit::kernels::cpu
