#include "lowbit/kernels/cuda/sparse.cuh"

#include "lowbit/kernels/cuda/internal/launch.cuh"
#include "lowbit/kernels/internal/sparse_math.h"

namespace lowbit::kernels::cuda {
namespace {

using launch::BlocksFor;
using launch::kThreads;

// One thread per element: its group's ranks are recomputed by each member,
// m comparisons from the same cache lines, no shared state.
__global__ void NmMaskKernel(const float* __restrict__ w, int64_t groups, int m, int n, uint8_t* __restrict__ mask) {
  const int64_t total = groups * m;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t g = i / m;
    mask[i] = NmKeeps(w + g * m, m, n, static_cast<int>(i - g * m)) ? 1 : 0;
  }
}

// One thread per group.
__global__ void NmCompressKernel(const float* __restrict__ w, const uint8_t* __restrict__ mask, int64_t groups, int m,
                                 int n, float* __restrict__ values, uint8_t* __restrict__ index,
                                 unsigned long long* bad) {
  for (int64_t g = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; g < groups; g += int64_t{blockDim.x} * gridDim.x) {
    if (!NmCompressGroup(w + g * m, mask + g * m, m, n, values + g * n, index + g * n)) atomicAdd(bad, 1ull);
  }
}

__global__ void NmDecompressKernel(const float* __restrict__ values, const uint8_t* __restrict__ index, int64_t groups,
                                   int m, int n, float* __restrict__ out, unsigned long long* bad) {
  for (int64_t g = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; g < groups; g += int64_t{blockDim.x} * gridDim.x) {
    if (!NmDecompressGroup(values + g * n, index + g * n, m, n, out + g * m)) atomicAdd(bad, 1ull);
  }
}

}  // namespace

cudaError_t NmMask(const float* w, int64_t groups, int m, int n, uint8_t* mask, cudaStream_t stream) {
  if (groups == 0) return cudaSuccess;
  NmMaskKernel<<<BlocksFor(groups * m), kThreads, 0, stream>>>(w, groups, m, n, mask);
  return cudaGetLastError();
}

cudaError_t NmCompress(const float* w, const uint8_t* mask, int64_t groups, int m, int n, float* values,
                       uint8_t* index, unsigned long long* bad, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(bad, 0, sizeof(*bad), stream);
  if (e != cudaSuccess || groups == 0) return e;
  NmCompressKernel<<<BlocksFor(groups), kThreads, 0, stream>>>(w, mask, groups, m, n, values, index, bad);
  return cudaGetLastError();
}

cudaError_t NmDecompress(const float* values, const uint8_t* index, int64_t groups, int m, int n, float* out,
                         unsigned long long* bad, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(bad, 0, sizeof(*bad), stream);
  if (e != cudaSuccess || groups == 0) return e;
  NmDecompressKernel<<<BlocksFor(groups), kThreads, 0, stream>>>(values, index, groups, m, n, out, bad);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
