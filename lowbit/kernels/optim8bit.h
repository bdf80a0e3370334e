// Fused optimizer steps with 8-bit blockwise state (Dettmers et al. 2022,
// "8-bit Optimizers via Block-wise Quantization"; bitsandbytes) or fp32
// state, on CPU or CUDA: the kernels under lowbit::optim's 8-bit optimizers.
//
// A state of n values in 8 bits is n uint8 codes into a 256-value dynamic
// map and one fp32 absmax per block: value = map[code] * absmax. Signed
// states (momenta) use the signed map, non-negative ones (second moments) the
// unsigned map. One step, per block: dequantize; with g the gradient (NaN and
// Inf elements counted as 0) times args.grad_scale,
//   Adam     g += l2 p; p *= decay; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//            p -= lr m / (sqrt(v) / sqrt(1 - b2^t) + eps)       (lr = lr / (1 - b1^t))
//   SGD      g += l2 p; m = g (first step) or b1 m + (1 - dampening) g;
//            p -= lr (nesterov ? g + b1 m : m)                   (no m: p -= lr g)
//   Lion     c = b1 m + (1-b1) g; p = p decay - lr sign(c); m = b2 m + (1-b2) g
//   RMSprop  g += l2 p; v = b2 v + (1-b2) g^2; s = g / (sqrt(v) + eps);
//            m = b1 m + s; p -= lr m                             (no m: p -= lr s)
//   Adagrad  g += l2 p; v += g^2; p -= lr g / (sqrt(v) + eps)
// then take each state block's new absmax and requantize to the nearest code.
// The parameter update uses the states before requantization.
//
//   OptimState m{.codes = at::zeros({n}, at::kByte), .absmax = at::zeros({(n + 255) / 256})};
//   OptimState v{...};
//   OptimStepArgs args;  // rule, lr, betas, ...
//   FusedOptimizerStep(args, param, grad, &m, &v, /*block=*/256);
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "lowbit/kernels/optim_types.h"

namespace lowbit::kernels {

// The 256 codes of the signed or unsigned dynamic map, sorted (a CPU tensor).
at::Tensor DynamicMap(bool is_signed);
// The block of a blockwise 8-bit state must be a power of two in [32, 4096].
void CheckOptimBlock(int64_t block);
int64_t NumOptimBlocks(int64_t n, int64_t block);

// codes (uint8, x.numel()) and absmax (float, one per block) of x.
void QuantizeDynamic(const at::Tensor& x, bool is_signed, int64_t block, at::Tensor& absmax, at::Tensor& codes);
void DequantizeDynamic(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed, int64_t block,
                       at::Tensor& out);

// One state of a fused step: fp32 `values` with the parameter's numel, or
// uint8 `codes` (the parameter's numel) and fp32 `absmax` (one per block).
struct OptimState {
  at::Tensor values;
  at::Tensor codes;
  at::Tensor absmax;
  bool defined() const { return values.defined() || codes.defined(); }
  bool quantized() const { return codes.defined(); }
};

// param and grad: float32, contiguous, same numel and device. m and v: null
// where the rule has no such state (see DispatchRule in
// kernels/internal/optim_math.h); both 8-bit or both fp32.
void FusedOptimizerStep(const OptimStepArgs& args, at::Tensor& param, const at::Tensor& grad, OptimState* m,
                        OptimState* v, int64_t block);

}  // namespace lowbit::kernels
