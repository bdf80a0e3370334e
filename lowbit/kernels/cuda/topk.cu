#include "lowbit/kernels/cuda/topk.cuh"

#include <cub/block/block_scan.cuh>

namespace lowbit::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = kSelectTile / kThreads;

__global__ void CountTilesKernel(const float* __restrict__ x, int64_t n, float threshold, int32_t* counts) {
  __shared__ int total;
  if (threadIdx.x == 0) total = 0;
  __syncthreads();
  const int64_t base = int64_t{blockIdx.x} * kSelectTile;
  int mine = 0;
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = base + threadIdx.x * kPerThread + k;
    if (i < n && fabsf(x[i]) >= threshold) ++mine;
  }
  atomicAdd(&total, mine);
  __syncthreads();
  if (threadIdx.x == 0) counts[blockIdx.x] = total;
}

// Each thread owns kPerThread consecutive elements; a block-wide exclusive
// scan of the per-thread counts gives every thread its output position.
__global__ void GatherKernel(const float* __restrict__ x, int64_t n, float threshold,
                             const int64_t* __restrict__ offsets, int32_t* __restrict__ idx,
                             float* __restrict__ val) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int64_t base = int64_t{blockIdx.x} * kSelectTile + threadIdx.x * kPerThread;
  int mine = 0;
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = base + k;
    if (i < n && fabsf(x[i]) >= threshold) ++mine;
  }
  int before = 0;
  Scan(temp).ExclusiveSum(mine, before);
  int64_t out = offsets[blockIdx.x] + before;
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = base + k;
    if (i < n && fabsf(x[i]) >= threshold) {
      idx[out] = static_cast<int32_t>(i);
      val[out] = x[i];
      ++out;
    }
  }
}

__global__ void ScatterAddKernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t k,
                                 float* __restrict__ out) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < k; i += int64_t{blockDim.x} * gridDim.x) {
    out[idx[i]] += val[i];
  }
}

int Tiles(int64_t n) { return static_cast<int>((n + kSelectTile - 1) / kSelectTile); }

}  // namespace

cudaError_t CountAtLeastTiles(const float* x, int64_t n, float threshold, int32_t* tile_counts,
                              cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  CountTilesKernel<<<Tiles(n), kThreads, 0, stream>>>(x, n, threshold, tile_counts);
  return cudaGetLastError();
}

cudaError_t GatherAtLeast(const float* x, int64_t n, float threshold, const int64_t* tile_offsets, int32_t* idx,
                          float* val, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  GatherKernel<<<Tiles(n), kThreads, 0, stream>>>(x, n, threshold, tile_offsets, idx, val);
  return cudaGetLastError();
}

cudaError_t ScatterAdd(const int32_t* idx, const float* val, int64_t k, float* out, cudaStream_t stream) {
  if (k <= 0) return cudaSuccess;
  const int64_t want = (k + kThreads - 1) / kThreads;
  ScatterAddKernel<<<static_cast<int>(want > 65535 ? 65535 : want), kThreads, 0, stream>>>(idx, val, k, out);
  return cudaGetLastError();
}

}  // namespace lowbit::kernels::cuda
