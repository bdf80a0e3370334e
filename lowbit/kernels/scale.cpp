#include "lowbit/kernels/scale.h"

#include <ATen/ATen.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/scale.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {

void ScaleInPlace(at::Tensor& t, double factor) {
  LOWBIT_CHECK(t.is_contiguous(), "ScaleInPlace: tensor must be contiguous, got strides ", t.strides());
  LOWBIT_CHECK(at::isFloatingType(t.scalar_type()), "ScaleInPlace: tensor must be floating point, got ",
               t.scalar_type());
  if (t.scalar_type() != at::kFloat) {
    t.mul_(factor);
    return;
  }
  switch (t.device().type()) {
    case c10::DeviceType::CPU:
      cpu::ScaleFloat(t.data_ptr<float>(), t.data_ptr<float>(), t.numel(), static_cast<float>(factor));
      return;
    case c10::DeviceType::CUDA:
      internal::ScaleFloatCuda(t, static_cast<float>(factor));
      return;
    default:
      LOWBIT_CHECK(false, "ScaleInPlace: unsupported device ", t.device());
  }
}

bool AllFinite(const at::Tensor& t) {
  if (t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous()) {
    return cpu::AllFiniteFloat(t.data_ptr<float>(), t.numel());
  }
  return at::isfinite(t).all().item<bool>();
}

}  // namespace lowbit::kernels
