// The CUDA half of the ops layer. cuda_dispatch.cpp implements it against a
// CUDA LibTorch; cuda_dispatch_stub.cpp is built instead when LibTorch has no CUDA
// (then no CUDA tensor can exist, and reaching it is a bug reported as such).
// Arguments are checked by the ops layer before these are called.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/core/Tensor.h>

#include "lowbit/kernels/internal/fake_quant_math.h"
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

// Fake quantization (kernels/cuda/fake_quant.cuh) on `device`'s current
// stream; the pointers are that device's.
void FakeQuantIntCuda(const at::Device& device, const float* x, QuantGroups g, const float* scale,
                      const float* zero_point, const float* offset, float qmin, float qmax, float* y, uint8_t* mask,
                      float* codes);
void FakeQuantIntBackwardCuda(const at::Device& device, const float* x, const float* dy, QuantGroups g,
                              const float* scale, const float* zero_point, const float* offset, float qmin,
                              float qmax, float* dx, float* dscale, float* doffset);
void FakeQuantMiniFloatCuda(const at::Device& device, const float* x, QuantGroups g, const float* scale,
                            MiniFloat f, float* y, uint8_t* mask);
void QuestQuantizeRowsCuda(const at::Device& device, const float* x, int64_t rows, int64_t cols, float clip_factor,
                           int bits, float* y, uint8_t* mask, float* clips);
void StochasticRoundIntCuda(const at::Device& device, const float* x, int64_t n, float scale, float qmin, float qmax,
                            uint64_t key, float* y);
void StochasticRoundMiniFloatCuda(const at::Device& device, const float* x, int64_t n, float scale, MiniFloat f,
                                  uint64_t key, float* y);
void FastWalshHadamardCuda(const at::Device& device, float* x, int64_t rows, int64_t cols, int64_t block);

// N:M sparsity (kernels/cuda/sparse.cuh) on `device`'s current stream; the
// compress/decompress forms return the number of bad groups (synchronising).
void NmMaskCuda(const at::Device& device, const float* w, int64_t groups, int m, int n, uint8_t* mask);
int64_t NmCompressCuda(const at::Device& device, const float* w, const uint8_t* mask, int64_t groups, int m, int n,
                       float* values, uint8_t* index);
int64_t NmDecompressCuda(const at::Device& device, const float* values, const uint8_t* index, int64_t groups, int m,
                         int n, float* out);

}  // namespace lowbit::kernels::internal
