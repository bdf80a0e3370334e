#include "lowbit/kernels/cuda/scale.cuh"

namespace lowbit::kernels::cuda {
namespace {

// Grid-stride loop with float4 loads where the pointers allow it.
__global__ void ScaleFloatKernel(const float* __restrict__ in, float* __restrict__ out, int64_t n,
                                 float scale) {
  const int64_t stride = int64_t{blockDim.x} * gridDim.x;
  int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const bool aligned = (reinterpret_cast<uintptr_t>(in) % 16 == 0) &&
                       (reinterpret_cast<uintptr_t>(out) % 16 == 0);
  if (aligned) {
    const int64_t n4 = n / 4;
    for (int64_t j = i; j < n4; j += stride) {
      float4 v = reinterpret_cast<const float4*>(in)[j];
      v.x *= scale; v.y *= scale; v.z *= scale; v.w *= scale;
      reinterpret_cast<float4*>(out)[j] = v;
    }
    for (int64_t j = n4 * 4 + i; j < n; j += stride) out[j] = in[j] * scale;
  } else {
    for (int64_t j = i; j < n; j += stride) out[j] = in[j] * scale;
  }
}

}  // namespace

cudaError_t ScaleFloat(const float* in, float* out, int64_t n, float scale, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t want = (n / 4 + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(want < 1 ? 1 : (want > 65535 ? 65535 : want));
  ScaleFloatKernel<<<blocks, kThreads, 0, stream>>>(in, out, n, scale);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
