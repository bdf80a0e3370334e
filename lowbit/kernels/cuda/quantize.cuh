// CUDA kernels for blockwise quantization with stochastic rounding; CPU twins
// and the format in kernels/cpu/quantize.h.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels::cuda {

cudaError_t BlockAbsMax(const float* x, int64_t n, int64_t block, float* scales, cudaStream_t stream);
cudaError_t QuantizeBlockwise(const float* x, int64_t n, int64_t block, const float* scales, int bits,
                              int levels, bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes,
                              cudaStream_t stream);
cudaError_t DequantizeBlockwise(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits,
                                int levels, float* out, bool accumulate, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
