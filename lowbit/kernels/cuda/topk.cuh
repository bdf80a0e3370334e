// CUDA kernels for sparse gradients; CPU twins in kernels/cpu/topk.h. The
// selection writes in increasing index order, like the CPU twin, so both give
// the same output for the same threshold.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels::cuda {

// Elements per tile of the selection; `tile_counts` holds ceil(n / kSelectTile).
constexpr int kSelectTile = 1024;

// tile_counts[t] = number of i in tile t with |x[i]| >= threshold.
cudaError_t CountAtLeastTiles(const float* x, int64_t n, float threshold, int32_t* tile_counts,
                              cudaStream_t stream);
// Writes the selected i of tile t at tile_offsets[t] onward (the exclusive
// prefix sum of tile_counts), in index order.
cudaError_t GatherAtLeast(const float* x, int64_t n, float threshold, const int64_t* tile_offsets, int32_t* idx,
                          float* val, cudaStream_t stream);
cudaError_t ScatterAdd(const int32_t* idx, const float* val, int64_t k, float* out, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
