// CUDA kernels for 1-bit sign compression; CPU twins in kernels/cpu/sign.h
// (same bit layout: element 8j + k is bit k of byte j, set when x >= 0).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels::cuda {

cudaError_t PackSigns(const float* x, int64_t n, uint8_t* bits, cudaStream_t stream);
// scales[i / block] is element i's scale (block: a multiple of 8).
cudaError_t UnpackSigns(const uint8_t* bits, int64_t n, const float* scales, int64_t block, float* out,
                        bool accumulate, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
