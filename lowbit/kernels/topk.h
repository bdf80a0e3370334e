// Sparse selection for top-k / DGC compression and the scatter-add that
// decodes it, CPU or CUDA.
//
//   auto [idx, val] = lowbit::kernels::TopKByMagnitude(x, k);   // int32, float
//   lowbit::kernels::ScatterAdd(idx, val, dense);                // dense[idx] += val
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/core/Tensor.h>

namespace lowbit::kernels {

// The k elements of largest |x|, ties broken towards the lower index; indices
// (int32) increase. x: contiguous float32 with fewer than 2^31 elements.
std::pair<at::Tensor, at::Tensor> TopKByMagnitude(const at::Tensor& x, int64_t k);
// Every element with |x| >= threshold, in index order.
std::pair<at::Tensor, at::Tensor> SelectAtLeast(const at::Tensor& x, float threshold);
// Indices i in [0, n) with Uniform(key, i) < density (int32, increasing),
// on `device`; computed on the CPU.
at::Tensor RandomSubset(uint64_t key, int64_t n, double density, c10::Device device);
// out[idx[i]] += val[i]; indices distinct.
void ScatterAdd(const at::Tensor& idx, const at::Tensor& val, at::Tensor& out);

}  // namespace lowbit::kernels
