#include "lowbit/kernels/cuda/fake_quant.cuh"

#include "lowbit/kernels/cuda/internal/launch.cuh"
#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::kernels::cuda {
namespace {

using launch::BlocksFor;
using launch::kThreads;

#define LOWBIT_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < (n); i += int64_t{blockDim.x} * gridDim.x)

__global__ void FakeQuantIntKernel(const float* __restrict__ x, QuantGroups g, const float* __restrict__ scale,
                                   const float* __restrict__ zero_point, const float* __restrict__ offset, float qmin,
                                   float qmax, float* __restrict__ y, uint8_t* __restrict__ mask,
                                   float* __restrict__ codes) {
  LOWBIT_GRID_STRIDE(i, g.n) {
    const int64_t k = (i / g.inner) % g.groups;
    const float s = scale[k], inv = 1.0f / s;
    const float zp = zero_point != nullptr ? zero_point[k] : 0.0f;
    float code;
    bool inside;
    float v;
    if (offset == nullptr) {
      v = FakeQuantIntOne(x[i], s, inv, zp, qmin, qmax, &code, &inside);
    } else {
      v = FakeQuantIntOne(x[i] - offset[k], s, inv, zp, qmin, qmax, &code, &inside) + offset[k];
    }
    y[i] = v;
    if (mask != nullptr) mask[i] = inside;
    if (codes != nullptr) codes[i] = code;
  }
}

__global__ void FakeQuantIntBackwardKernel(const float* __restrict__ x, const float* __restrict__ dy, QuantGroups g,
                                           const float* __restrict__ scale, const float* __restrict__ zero_point,
                                           const float* __restrict__ offset, float qmin, float qmax,
                                           float* __restrict__ dx, float* __restrict__ dscale,
                                           float* __restrict__ doffset) {
  LOWBIT_GRID_STRIDE(i, g.n) {
    const int64_t k = (i / g.inner) % g.groups;
    const float s = scale[k], inv = 1.0f / s;
    const float zp = zero_point != nullptr ? zero_point[k] : 0.0f;
    const float b = offset != nullptr ? offset[k] : 0.0f;
    const IntGrads d = FakeQuantIntGradOne(x[i], dy[i], s, inv, zp, b, qmin, qmax);
    dx[i] = d.dx;
    if (dscale != nullptr) dscale[i] = d.dscale;
    if (doffset != nullptr) doffset[i] = d.doffset;
  }
}

__global__ void FakeQuantMiniFloatKernel(const float* __restrict__ x, QuantGroups g, const float* __restrict__ scale,
                                         MiniFloat f, float* __restrict__ y, uint8_t* __restrict__ mask) {
  LOWBIT_GRID_STRIDE(i, g.n) {
    bool inside;
    y[i] = FakeQuantMiniFloatOne(x[i], scale[(i / g.inner) % g.groups], f, &inside);
    if (mask != nullptr) mask[i] = inside;
  }
}

// One block per row. The sum of squares is in double, like the CPU's, so the
// row's clip rounds to the same float (the order differs only below float
// precision).
__global__ void QuestRowsKernel(const float* __restrict__ x, int64_t rows, int64_t cols, float clip_factor,
                                float levels_minus_1, float* __restrict__ y, uint8_t* __restrict__ mask,
                                float* __restrict__ clips) {
  __shared__ double part[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += static_cast<double>(xr[j]) * xr[j];
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
      __syncthreads();
    }
    const float rms = static_cast<float>(sqrt(part[0] / static_cast<double>(cols)));
    const float clip = clip_factor * rms + 1e-8f;
    const float step = 2.0f * clip / levels_minus_1;
    if (threadIdx.x == 0 && clips != nullptr) clips[r] = clip;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      bool trusted;
      y[r * cols + j] = QuestGridOne(xr[j], clip, step, levels_minus_1, &trusted);
      mask[r * cols + j] = trusted;
    }
    __syncthreads();
  }
}

__global__ void StochasticRoundIntKernel(const float* __restrict__ x, int64_t n, float scale, float inv, float qmin,
                                         float qmax, uint64_t key, float* __restrict__ y) {
  LOWBIT_GRID_STRIDE(i, n) { y[i] = StochasticRoundIntOne(x[i], scale, inv, qmin, qmax, Uniform(key, i)); }
}

__global__ void StochasticRoundMiniFloatKernel(const float* __restrict__ x, int64_t n, float scale, MiniFloat f,
                                               uint64_t key, float* __restrict__ y) {
  LOWBIT_GRID_STRIDE(i, n) { y[i] = StochasticRoundToMiniFloat(x[i] / scale, f, Uniform(key, i)) * scale; }
}

// Blocks of up to kSharedHadamard elements in shared memory, one CUDA block
// each; the butterflies in the CPU's order, so the results are bitwise equal.
constexpr int64_t kSharedHadamard = 4096;

__global__ void HadamardSharedKernel(float* __restrict__ x, int64_t blocks, int64_t block, float norm) {
  __shared__ float v[kSharedHadamard];
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    float* base = x + b * block;
    for (int64_t j = threadIdx.x; j < block; j += blockDim.x) v[j] = base[j];
    __syncthreads();
    for (int64_t h = 1; h < block; h *= 2) {
      for (int64_t t = threadIdx.x; t < block / 2; t += blockDim.x) {
        const int64_t j = (t / h) * 2 * h + t % h;
        const float a = v[j], c = v[j + h];
        v[j] = a + c;
        v[j + h] = a - c;
      }
      __syncthreads();
    }
    for (int64_t j = threadIdx.x; j < block; j += blockDim.x) base[j] = v[j] * norm;
    __syncthreads();
  }
}

// Larger blocks: one launch per butterfly stage over global memory.
__global__ void HadamardStageKernel(float* __restrict__ x, int64_t pairs, int64_t block, int64_t h) {
  LOWBIT_GRID_STRIDE(t, pairs) {
    const int64_t b = t / (block / 2), u = t % (block / 2);
    float* base = x + b * block;
    const int64_t j = (u / h) * 2 * h + u % h;
    const float a = base[j], c = base[j + h];
    base[j] = a + c;
    base[j + h] = a - c;
  }
}

__global__ void ScaleKernel(float* __restrict__ x, int64_t n, float norm) {
  LOWBIT_GRID_STRIDE(i, n) { x[i] *= norm; }
}

}  // namespace

cudaError_t FakeQuantInt(const float* x, QuantGroups g, const float* scale, const float* zero_point,
                         const float* offset, float qmin, float qmax, float* y, uint8_t* mask, float* codes,
                         cudaStream_t stream) {
  if (g.n == 0) return cudaSuccess;
  FakeQuantIntKernel<<<BlocksFor(g.n), kThreads, 0, stream>>>(x, g, scale, zero_point, offset, qmin, qmax, y, mask,
                                                               codes);
  return cudaGetLastError();
}

cudaError_t FakeQuantIntBackward(const float* x, const float* dy, QuantGroups g, const float* scale,
                                 const float* zero_point, const float* offset, float qmin, float qmax, float* dx,
                                 float* dscale, float* doffset, cudaStream_t stream) {
  if (g.n == 0) return cudaSuccess;
  FakeQuantIntBackwardKernel<<<BlocksFor(g.n), kThreads, 0, stream>>>(x, dy, g, scale, zero_point, offset, qmin,
                                                                       qmax, dx, dscale, doffset);
  return cudaGetLastError();
}

cudaError_t FakeQuantMiniFloat(const float* x, QuantGroups g, const float* scale, MiniFloat f, float* y,
                               uint8_t* mask, cudaStream_t stream) {
  if (g.n == 0) return cudaSuccess;
  FakeQuantMiniFloatKernel<<<BlocksFor(g.n), kThreads, 0, stream>>>(x, g, scale, f, y, mask);
  return cudaGetLastError();
}

cudaError_t QuestQuantizeRows(const float* x, int64_t rows, int64_t cols, float clip_factor, int bits, float* y,
                              uint8_t* mask, float* clips, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int grid = static_cast<int>(rows < 65535 ? rows : 65535);
  QuestRowsKernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, clip_factor, static_cast<float>((1 << bits) - 1), y,
                                                 mask, clips);
  return cudaGetLastError();
}

cudaError_t StochasticRoundInt(const float* x, int64_t n, float scale, float qmin, float qmax, uint64_t key,
                               float* y, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  StochasticRoundIntKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, scale, 1.0f / scale, qmin, qmax, key, y);
  return cudaGetLastError();
}

cudaError_t StochasticRoundMiniFloat(const float* x, int64_t n, float scale, MiniFloat f, uint64_t key, float* y,
                                     cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  StochasticRoundMiniFloatKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, scale, f, key, y);
  return cudaGetLastError();
}

cudaError_t FastWalshHadamard(float* x, int64_t rows, int64_t cols, int64_t block, cudaStream_t stream) {
  const int64_t blocks = rows * (cols / block);
  if (blocks == 0) return cudaSuccess;
  const float norm = 1.0f / sqrtf(static_cast<float>(block));
  if (block <= kSharedHadamard) {
    const int grid = static_cast<int>(blocks < 65535 ? blocks : 65535);
    HadamardSharedKernel<<<grid, kThreads, 0, stream>>>(x, blocks, block, norm);
    return cudaGetLastError();
  }
  const int64_t pairs = blocks * (block / 2);
  for (int64_t h = 1; h < block; h *= 2) {
    HadamardStageKernel<<<BlocksFor(pairs), kThreads, 0, stream>>>(x, pairs, block, h);
  }
  ScaleKernel<<<BlocksFor(blocks * block), kThreads, 0, stream>>>(x, blocks * block, norm);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
