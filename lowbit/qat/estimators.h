// Fake quantization with custom gradients: each function is one
// torch::autograd::Function. The forward arithmetic is kernels/fake_quant.h;
// the gradients are those of the papers cited (formulas in
// ../shared/design.md, qat/). FakeQuantizer (qat/fake_quantizer.h) picks
// the function from its QuantizerConfig; these are public for custom layers
// and for the tests.
//
//   at::Tensor y = FakeQuantLsq(x, step, {}, -8, 7, per_tensor, 1.0 / std::sqrt(x.numel() * 7.0));
//   y.sum().backward();                       // step.grad() as in LSQ eq. 3
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "lowbit/kernels/fake_quant.h"

namespace lowbit::qat {

// Integer grid with fixed scale (and zero point, offset; undefined: 0). STE:
// dx = dy; clipped STE: dx = dy where x was inside the grid, else 0.
at::Tensor FakeQuantSte(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                        const at::Tensor& offset, int64_t qmin, int64_t qmax, const kernels::ScaleLayout& layout,
                        bool clipped);

// Mini-float grid s * format with STE or clipped STE.
at::Tensor FakeQuantMiniFloatSte(const at::Tensor& x, const at::Tensor& scale, kernels::MiniFloat format,
                                 const kernels::ScaleLayout& layout, bool clipped);

// LSQ (Esser et al. 2020): y = s * clamp(round(x / s), qmin, qmax); dx = dy
// inside; ds = sum of dy * (round(x/s) - x/s) inside, qmin below, qmax above,
// times grad_factor (LSQ uses 1 / sqrt(numel * qmax)). With an offset
// (LSQ+, Bhalgat et al. 2020): y = s * clamp(round((x - b) / s)) + b and
// db = sum of dy outside the grid. scale (and offset) require grad.
at::Tensor FakeQuantLsq(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& offset, int64_t qmin,
                        int64_t qmax, const kernels::ScaleLayout& layout, double grad_factor);

// PACT (Choi et al. 2018): y = clip(x, 0, alpha) on 2^bits - 1 even steps;
// dx = dy * 1{0 <= x <= alpha}, dalpha = sum dy * 1{x >= alpha}. alpha is a
// one-element tensor that requires grad.
at::Tensor FakeQuantPact(const at::Tensor& x, const at::Tensor& alpha, int64_t bits);

// QuEST (Panferov et al. 2025): rows along `dim` are rotated by the block
// Hadamard transform H (block: the largest power of two <= max_block that
// divides the row), quantized on QuEST's grid clipped at the Gaussian
// MSE-optimal multiple of the row's RMS, and rotated back: y = Q(x H) H^T.
// Backward: dx = ((dy H) * M) H^T with the trust mask M = 1{|Q - xH| <= step/2}.
at::Tensor FakeQuantQuest(const at::Tensor& x, int64_t bits, int64_t max_block, int64_t dim);

// The MSE-optimal clip of a unit Gaussian for QuEST's 2^bits-level grid
// (QuEST's table; 4 bits: 2.5139).
double QuestGaussianClip(int64_t bits);

// The Hadamard block FakeQuantQuest uses for rows of `cols` elements.
int64_t QuestBlock(int64_t cols, int64_t max_block);

// Stochastic rounding onto scale * [qmin, qmax] (draws from `key`), STE.
at::Tensor FakeQuantStochastic(const at::Tensor& x, double scale, int64_t qmin, int64_t qmax, uint64_t key);

// How a layer's output gradient is quantized in backward (low-bit training).
struct GradientQuant {
  enum Kind { kNone, kInt8, kFp8E5M2, kFp8E4M3 } kind = kNone;
};

// Identity forward; backward replaces dy by its stochastic rounding onto a
// per-tensor grid (int8: absmax / 127; fp8: absmax / format max), so the
// weight and input gradients are computed from low-bit output gradients.
at::Tensor QuantizeGradient(const at::Tensor& y, GradientQuant q, uint64_t key);

}  // namespace lowbit::qat
