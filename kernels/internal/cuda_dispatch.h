// The CUDA half of the ops layer. cuda_dispatch.cpp implements it against a
// CUDA LibTorch; cuda_dispatch_stub.cpp is built instead when LibTorch has no CUDA
// (then no CUDA tensor can exist, and reaching it is a bug reported as such).
#pragma once

#include <ATen/core/Tensor.h>

namespace lowbit::kernels::internal {

void ScaleFloatCuda(at::Tensor& t, float factor);

}  // namespace lowbit::kernels::internal
