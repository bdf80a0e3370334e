#include "lowbit/kernels/cuda/sign.cuh"

#include "lowbit/kernels/cuda/internal/launch.cuh"

namespace lowbit::kernels::cuda {
namespace {

using launch::BlocksFor;
using launch::kThreads;

// One thread per output byte.
__global__ void PackSignsKernel(const float* __restrict__ x, int64_t n, uint8_t* __restrict__ bits) {
  const int64_t nbytes = (n + 7) / 8;
  for (int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; j < nbytes;
       j += int64_t{blockDim.x} * gridDim.x) {
    uint8_t b = 0;
    for (int k = 0; k < 8; ++k) {
      const int64_t i = 8 * j + k;
      if (i < n) b |= static_cast<uint8_t>(x[i] >= 0.0f) << k;
    }
    bits[j] = b;
  }
}

__global__ void UnpackSignsKernel(const uint8_t* __restrict__ bits, int64_t n, const float* __restrict__ scales,
                                  int64_t block, float* __restrict__ out, bool accumulate) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    const float scale = scales[i / block];
    const float v = ((bits[i / 8] >> (i % 8)) & 1) ? scale : -scale;
    out[i] = accumulate ? out[i] + v : v;
  }
}

}  // namespace

cudaError_t PackSigns(const float* x, int64_t n, uint8_t* bits, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  PackSignsKernel<<<BlocksFor((n + 7) / 8), kThreads, 0, stream>>>(x, n, bits);
  return cudaGetLastError();
}

cudaError_t UnpackSigns(const uint8_t* bits, int64_t n, const float* scales, int64_t block, float* out,
                        bool accumulate, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  UnpackSignsKernel<<<BlocksFor(n), kThreads, 0, stream>>>(bits, n, scales, block, out, accumulate);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
