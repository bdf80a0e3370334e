// CUDA twins of the fake-quantization kernels in kernels/cpu/fake_quant.h:
// the same arguments plus a stream, the same per-element arithmetic
// (kernels/internal/fake_quant_math.h), so results are bitwise equal.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "lowbit/kernels/internal/fake_quant_math.h"

namespace lowbit::kernels::cuda {

cudaError_t FakeQuantInt(const float* x, QuantGroups g, const float* scale, const float* zero_point,
                         const float* offset, float qmin, float qmax, float* y, uint8_t* mask, float* codes,
                         cudaStream_t stream);
cudaError_t FakeQuantIntBackward(const float* x, const float* dy, QuantGroups g, const float* scale,
                                 const float* zero_point, const float* offset, float qmin, float qmax, float* dx,
                                 float* dscale, float* doffset, cudaStream_t stream);
cudaError_t FakeQuantMiniFloat(const float* x, QuantGroups g, const float* scale, MiniFloat f, float* y,
                               uint8_t* mask, cudaStream_t stream);
cudaError_t QuestQuantizeRows(const float* x, int64_t rows, int64_t cols, float clip_factor, int bits, float* y,
                              uint8_t* mask, float* clips, cudaStream_t stream);
cudaError_t StochasticRoundInt(const float* x, int64_t n, float scale, float qmin, float qmax, uint64_t key,
                               float* y, cudaStream_t stream);
cudaError_t StochasticRoundMiniFloat(const float* x, int64_t n, float scale, MiniFloat f, uint64_t key, float* y,
                                     cudaStream_t stream);
cudaError_t FastWalshHadamard(float* x, int64_t rows, int64_t cols, int64_t block, cudaStream_t stream);

}  // namespace lowbit::kernels::cuda
