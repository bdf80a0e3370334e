// Fake quantization for quantization-aware training, CPU or CUDA (bitwise
// twins). The arithmetic is described in kernels/cpu/fake_quant.h; the
// estimators built on it are in qat/.
//
//   at::Tensor mask;
//   ScaleLayout per_channel{ScaleLayout::kPerChannel, /*axis=*/0};
//   at::Tensor y = FakeQuantizeInt(w, scale, zero_point, {}, -128, 127, per_channel, &mask);
//   FastWalshHadamard_(x2d, 128);               // orthonormal, in place
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "lowbit/kernels/mini_float.h"

namespace lowbit::kernels {

// Which scale each element uses: one for the tensor; one per index of
// `axis`; or one per `group_size` consecutive elements of the last dimension.
struct ScaleLayout {
  enum Kind { kPerTensor, kPerChannel, kPerGroup };
  Kind kind = kPerTensor;
  int64_t axis = 0;
  int64_t group_size = 0;
};

// Number of scales x needs under `layout`; checks the axis and that the
// group size divides the last dimension, naming the values seen.
int64_t NumScales(const at::Tensor& x, const ScaleLayout& layout);

// y = (clamp(zp + nearbyint((x - offset) / s), qmin, qmax) - zp) * s + offset
// (kernels/cpu/fake_quant.h). zero_point and offset are optional (undefined:
// 0), float, one per scale. If mask is given it gets a bool tensor (inside).
at::Tensor FakeQuantizeInt(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                           const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout,
                           at::Tensor* mask = nullptr);

// (dx, dscale, doffset) of FakeQuantizeInt, dscale and doffset summed per
// scale (undefined unless asked for); see FakeQuantIntBackward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> FakeQuantizeIntBackward(
    const at::Tensor& x, const at::Tensor& dy, const at::Tensor& scale, const at::Tensor& zero_point,
    const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout, bool want_dscale,
    bool want_doffset);

// The clamped integer level of each element under FakeQuantizeInt's grid,
// as float (Convert stores them as integers).
at::Tensor QuantizeIntCodes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                            const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout);

// y = s * RoundToMiniFloat(x / s); mask as above.
at::Tensor FakeQuantizeMiniFloat(const at::Tensor& x, const at::Tensor& scale, MiniFloat format,
                                 const ScaleLayout& layout, at::Tensor* mask = nullptr);

// QuEST's grid on each row of a 2-D tensor (see QuestQuantizeRows); mask is
// the trust mask. clips, if given, gets each row's clip value.
at::Tensor QuestQuantizeRows(const at::Tensor& x, double clip_factor, int64_t bits, at::Tensor* mask,
                             at::Tensor* clips = nullptr);

// Unbiased stochastic rounding onto scale * [qmin, qmax]; element i's draw is
// Uniform(key, i) (kernels/internal/counter_rng.h).
at::Tensor StochasticRoundInt(const at::Tensor& x, double scale, int64_t qmin, int64_t qmax, uint64_t key);

// Unbiased stochastic rounding onto the scaled mini-float grid s * format.
at::Tensor StochasticRoundMiniFloat(const at::Tensor& x, double scale, MiniFloat format, uint64_t key);

// In place along the last dimension, in blocks of `block` (a power of two
// dividing it): x <- x H / sqrt(block). Orthonormal and its own inverse.
void FastWalshHadamard_(at::Tensor& x, int64_t block);

}  // namespace lowbit::kernels
