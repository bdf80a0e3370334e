// CPU kernels for sparse gradients (Deep Gradient Compression, Lin et al. 2018;
// top-k / random-k sparsification): threshold selection in index order and
// scatter-add. The CUDA twins are kernels/cuda/topk.cuh; the ops layer
// kernels/topk.h.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu {

// Number of i with |x[i]| >= threshold.
int64_t CountAtLeast(const float* x, int64_t n, float threshold);
// Writes, in increasing index order, every i with |x[i]| > threshold and the
// first `max_ties` i with |x[i]| == threshold (max_ties < 0: all of them);
// returns how many were written (idx and val must hold that many).
int64_t GatherSelected(const float* x, int64_t n, float threshold, int64_t max_ties, int32_t* idx, float* val);
// Every i with |x[i]| >= threshold, in index order; returns how many, or -1
// (having stopped early) when there are more than `cap`.
int64_t GatherAtLeast(const float* x, int64_t n, float threshold, int64_t cap, int32_t* idx, float* val);
// Every i with Uniform(key, i) < density, in index order (random-k with
// indices every rank can regenerate); returns how many (idx holds up to n).
int64_t RandomSubset(uint64_t key, int64_t n, float density, int32_t* idx);
// out[idx[i]] += val[i]; the indices within one call must be distinct.
void ScatterAdd(const int32_t* idx, const float* val, int64_t k, float* out);

}  // namespace lowbit::kernels::cpu
