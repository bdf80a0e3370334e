// ScaleInPlace: multiplies a tensor by a scalar in place, on CPU or CUDA.
//
// The process groups use it to turn a summed allreduce into a mean. Example:
//   lowbit::kernels::ScaleInPlace(grad, 1.0 / world_size);
#pragma once

#include <ATen/core/Tensor.h>

namespace lowbit::kernels {

// `t` must be contiguous. float32 runs lowbit's kernels (CPU or CUDA); other
// floating dtypes fall back to ATen's mul_.
void ScaleInPlace(at::Tensor& t, double factor);
// Whether every element of a floating tensor is finite (no NaN, no Inf). On
// the CPU one read-only pass for float32 (no temporary, unlike
// at::isfinite(t).all()).
bool AllFinite(const at::Tensor& t);

}  // namespace lowbit::kernels
