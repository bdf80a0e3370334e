// CUDA kernels of the 8-bit blockwise optimizers; the format, the CPU twins
// and what each argument means are in kernels/cpu/optim8bit.h. The
// DynamicCode pointers are device memory.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "lowbit/kernels/internal/optim_math.h"

namespace lowbit::kernels::cuda {

cudaError_t QuantizeDynamic(const float* x, int64_t n, int64_t block, const DynamicCode* code, float* absmax,
                            uint8_t* codes, cudaStream_t stream);
cudaError_t DequantizeDynamic(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                              const DynamicCode* code, float* out, cudaStream_t stream);
// block: IsOptimBlock (kernels/internal/optim_math.h). Returns cudaErrorInvalidValue for a
// rule and state combination that does not exist.
cudaError_t OptimizerStep8bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, int64_t block,
                              uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                              const DynamicCode* signed_code, const DynamicCode* unsigned_code, cudaStream_t stream);
cudaError_t OptimizerStep32bit(const OptimStepArgs& a, float* p, const float* g, int64_t n, float* m, float* v,
                               cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
