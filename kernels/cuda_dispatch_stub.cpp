#include <c10/util/Exception.h>

#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels::internal {

void ScaleFloatCuda(at::Tensor& t, float factor) {
  TORCH_CHECK(false, "lowbit was built against a LibTorch without CUDA, but got a tensor on ",
              t.device());
}

}  // namespace lowbit::kernels::internal
