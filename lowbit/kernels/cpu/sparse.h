// CPU kernels of N:M sparsity: the magnitude mask, and the compressed form
// (the n kept values of each group of m and their positions in it). Groups
// are m consecutive elements; the ops layer (kernels/sparse.h) lays a weight
// out so that they run along its input dimension. The CUDA twins are
// kernels/cuda/sparse.cuh.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu {

// mask[i] = 1 for the n largest magnitudes of each group of m (ties to the
// lower position), else 0.
void NmMask(const float* w, int64_t groups, int m, int n, uint8_t* mask);

// For each group, the positions with mask 1 in increasing order: values[g*n
// + t] and index[g*n + t]. Returns the number of groups whose mask does not
// hold exactly n ones (those groups are written as far as they go).
int64_t NmCompress(const float* w, const uint8_t* mask, int64_t groups, int m, int n, float* values,
                   uint8_t* index);

// The inverse: out (groups * m) gets zeros and values at their positions.
// Returns the number of groups with an index >= m or not increasing.
int64_t NmDecompress(const float* values, const uint8_t* index, int64_t groups, int m, int n, float* out);

}  // namespace lowbit::kernels::cpu
