#include "lowbit/kernels/cuda/quantize.cuh"

#include "lowbit/kernels/cuda/internal/launch.cuh"
#include "lowbit/kernels/internal/quantize_math.h"

namespace lowbit::kernels::cuda {
namespace {

using launch::BlocksFor;
using launch::kThreads;

// One CUDA block per quantization block; max is order-independent, so the
// result equals the CPU twin's exactly.
__global__ void BlockAbsMaxKernel(const float* __restrict__ x, int64_t n, int64_t block, float* scales) {
  __shared__ float part[kThreads];
  __shared__ int nan_seen;
  const int64_t nblocks = (n + block - 1) / block;
  for (int64_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    if (threadIdx.x == 0) nan_seen = 0;
    __syncthreads();
    const int64_t begin = b * block;
    const int64_t end = begin + block < n ? begin + block : n;
    float m = 0.0f;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const float v = x[i];
      if (isnan(v)) nan_seen = 1;
      m = fmaxf(m, fabsf(v));
    }
    part[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) part[threadIdx.x] = fmaxf(part[threadIdx.x], part[threadIdx.x + s]);
      __syncthreads();
    }
    if (threadIdx.x == 0) scales[b] = nan_seen ? __int_as_float(0x7fc00000) : part[0];
    __syncthreads();
  }
}

// One thread per group of 8 elements, which is `bits` whole output bytes.
__global__ void QuantizeKernel(const float* __restrict__ x, int64_t n, int64_t block,
                               const float* __restrict__ scales, int bits, int levels, bool stochastic,
                               uint64_t key, int64_t index_base, uint8_t* __restrict__ codes) {
  const int64_t groups = (n + 7) / 8;
  for (int64_t g = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; g < groups;
       g += int64_t{blockDim.x} * gridDim.x) {
    internal::QuantizeGroup(x, n, g, block, scales, bits, levels, stochastic, key, index_base, codes);
  }
}

__global__ void DequantizeKernel(const uint8_t* __restrict__ codes, const float* __restrict__ scales, int64_t n,
                                 int64_t block, int bits, int levels, float* __restrict__ out, bool accumulate) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t g = i / 8;
    const uint64_t word = internal::LoadGroup(codes + g * bits, bits);
    const float s = scales[i / block];
    const float v = internal::DequantizeOne(static_cast<uint32_t>((word >> ((i % 8) * bits)) & mask),
                                            internal::StepOf(s, levels), s);
    out[i] = accumulate ? out[i] + v : v;
  }
}

}  // namespace

cudaError_t BlockAbsMax(const float* x, int64_t n, int64_t block, float* scales, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t nblocks = (n + block - 1) / block;
  BlockAbsMaxKernel<<<static_cast<int>(nblocks > 65535 ? 65535 : nblocks), kThreads, 0, stream>>>(x, n, block,
                                                                                                   scales);
  return cudaGetLastError();
}

cudaError_t QuantizeBlockwise(const float* x, int64_t n, int64_t block, const float* scales, int bits,
                              int levels, bool stochastic, uint64_t key, int64_t index_base, uint8_t* codes,
                              cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  QuantizeKernel<<<BlocksFor((n + 7) / 8), kThreads, 0, stream>>>(x, n, block, scales, bits, levels, stochastic,
                                                                   key, index_base, codes);
  return cudaGetLastError();
}

cudaError_t DequantizeBlockwise(const uint8_t* codes, const float* scales, int64_t n, int64_t block, int bits,
                                int levels, float* out, bool accumulate, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  DequantizeKernel<<<BlocksFor(n), kThreads, 0, stream>>>(codes, scales, n, block, bits, levels, out, accumulate);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
