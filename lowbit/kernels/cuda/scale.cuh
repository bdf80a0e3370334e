// CUDA kernel: out[i] = in[i] * scale; the CPU twin is kernels/cpu/scale.h.
// Raw pointers, a count and a stream (no torch types), so plain nvcc builds it.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels::cuda {

// Returns the launch status; callers check it with their error macro.
cudaError_t ScaleFloat(const float* in, float* out, int64_t n, float scale, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
