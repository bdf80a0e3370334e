// The CUDA half of the ops layer. cuda_dispatch.cpp implements it against a
// CUDA LibTorch; cuda_dispatch_stub.cpp is built instead when LibTorch has no CUDA
// (then no CUDA tensor can exist, and reaching it is a bug reported as such).
// Arguments are checked by the ops layer before these are called.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/core/Tensor.h>

#include "lowbit/kernels/optim8bit.h"
#include "lowbit/kernels/quantize.h"

namespace lowbit::kernels::internal {

void ScaleFloatCuda(at::Tensor& t, float factor);
void PackSignsCuda(const at::Tensor& x, at::Tensor& bits);
void UnpackSignsCuda(const at::Tensor& bits, const at::Tensor& scales, int64_t block, at::Tensor& out,
                     bool accumulate);
void BlockAbsMaxCuda(const at::Tensor& x, int64_t block, at::Tensor& scales);
void QuantizeBlockwiseCuda(const at::Tensor& x, const at::Tensor& scales, const QuantSpec& spec, uint64_t key,
                           int64_t index_base, at::Tensor& codes);
void DequantizeBlockwiseCuda(const at::Tensor& codes, const at::Tensor& scales, const QuantSpec& spec,
                             at::Tensor& out, bool accumulate);
std::pair<at::Tensor, at::Tensor> SelectAtLeastCuda(const at::Tensor& x, float threshold);
void ScatterAddCuda(const at::Tensor& idx, const at::Tensor& val, at::Tensor& out);

// The dynamic maps' host tables (kernels/optim8bit.cpp); the CUDA side keeps
// a copy per device.
const DynamicCode& HostDynamicCode(bool is_signed);
void QuantizeDynamicCuda(const at::Tensor& x, bool is_signed, int64_t block, at::Tensor& absmax, at::Tensor& codes);
void DequantizeDynamicCuda(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed, int64_t block,
                           at::Tensor& out);
void FusedOptimizerStepCuda(const OptimStepArgs& args, at::Tensor& param, const at::Tensor& grad, OptimState* m,
                            OptimState* v, int64_t block);

}  // namespace lowbit::kernels::internal
