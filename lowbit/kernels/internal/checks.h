// Argument checks shared by the ops layer; messages name the op, the argument
// and what was seen.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "lowbit/base/error.h"

namespace lowbit::kernels::internal {

inline void CheckTensor(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  LOWBIT_CHECK(t.defined(), op, ": ", name, " is undefined");
  LOWBIT_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  LOWBIT_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous, got strides ", t.strides());
  LOWBIT_CHECK(t.device().is_cpu() || t.device().is_cuda(), op, ": ", name, " must be on CPU or CUDA, got ",
               t.device());
}

inline void CheckNumel(const char* op, const char* name, const at::Tensor& t, int64_t want) {
  LOWBIT_CHECK(t.numel() == want, op, ": ", name, " must have ", want, " elements, got ", t.numel());
}

inline void CheckSameDevice(const char* op, const at::Tensor& a, const at::Tensor& b) {
  LOWBIT_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.device(), " and ", b.device());
}

}  // namespace lowbit::kernels::internal
