// N:M and magnitude sparsity masks, and the compressed N:M form, on
// at::Tensor (CPU, or CUDA through kernels/cuda/sparse.cuh). The sparsity/
// folder builds training on these; the formulas are in ../shared/design.md.
//
//   at::Tensor mask = NmMask(w, 2, 4);             // w: [rows, cols], cols % 4 == 0
//   NmCompressed c = CompressNm(w * mask, mask, 2, 4);
//   at::Tensor back = DecompressNm(c.values, c.index, 2, 4);   // == w * mask
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace lowbit::kernels {

// Bool mask of w's shape ([rows, cols] float, contiguous, cols a multiple of
// m): in every group of m consecutive elements of a row, true for the n
// largest |w| (ties to the lower position; NaN counts as largest).
// 1 <= n <= m <= 128.
at::Tensor NmMask(const at::Tensor& w, int64_t n, int64_t m);

// The compressed N:M form of a [rows, cols] weight under an N:M mask:
// values [rows, cols / m * n] (float) and index [rows, cols / m * n] (uint8,
// the position of each value in its group of m, increasing within a group).
// At 2:4 that is 50% of the values plus one byte per kept value.
struct NmCompressed {
  at::Tensor values, index;
};
// Throws, naming the count, if some group of the mask does not hold exactly n.
NmCompressed CompressNm(const at::Tensor& w, const at::Tensor& mask, int64_t n, int64_t m);
// The dense [rows, cols / n * m] weight: zeros except the values at their
// positions. Throws on an index >= m or not increasing within a group.
at::Tensor DecompressNm(const at::Tensor& values, const at::Tensor& index, int64_t n, int64_t m);

// Bool mask of w's shape with exactly round(sparsity * numel) false: the
// smallest |w| (ties to the lower flat index). sparsity in [0, 1).
at::Tensor MagnitudeMask(const at::Tensor& w, double sparsity);

// Block magnitude mask of a [rows, cols] w: blocks of block_rows x
// block_cols are scored by the sum of |w| and round(sparsity * blocks) of
// the lowest-scoring blocks are false. The block shape must tile w.
at::Tensor BlockMagnitudeMask(const at::Tensor& w, double sparsity, int64_t block_rows, int64_t block_cols);

}  // namespace lowbit::kernels
