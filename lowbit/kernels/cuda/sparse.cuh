// CUDA twins of kernels/cpu/sparse.h (N:M masks and the compressed form):
// the same arguments plus a stream, the same per-group arithmetic
// (kernels/internal/sparse_math.h). The counts of bad groups go to a device
// int64 (`bad`, zeroed here) for the ops layer to read.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels::cuda {

cudaError_t NmMask(const float* w, int64_t groups, int m, int n, uint8_t* mask, cudaStream_t stream);
cudaError_t NmCompress(const float* w, const uint8_t* mask, int64_t groups, int m, int n, float* values,
                       uint8_t* index, unsigned long long* bad, cudaStream_t stream);
cudaError_t NmDecompress(const float* values, const uint8_t* index, int64_t groups, int m, int n, float* out,
                         unsigned long long* bad, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
