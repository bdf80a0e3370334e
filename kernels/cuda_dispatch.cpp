#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "lowbit/kernels/cuda/scale.cuh"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels::internal {

void ScaleFloatCuda(at::Tensor& t, float factor) {
  c10::cuda::CUDAGuard guard(t.device());
  const cudaError_t err = cuda::ScaleFloat(t.data_ptr<float>(), t.data_ptr<float>(), t.numel(),
                                           factor, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "lowbit ScaleFloat kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace lowbit::kernels::internal
