// Sign packing for 1-bit compression (signSGD, 1-bit Adam), CPU or CUDA.
//
//   at::Tensor bits = lowbit::kernels::PackSigns(x);          // ceil(n/8) bytes
//   at::Tensor y = at::empty_like(x);
//   lowbit::kernels::UnpackSigns(bits, scales, block, y, /*accumulate=*/false);  // y = ±scales[i / block]
//
// Element 8j + k is bit k of byte j, set when x >= 0 (sign(0) = +1).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace lowbit::kernels {

// x: contiguous float32. Returns uint8 of ceil(n / 8) on x's device.
at::Tensor PackSigns(const at::Tensor& x);
// Writes into `bits` (uint8, ceil(x.numel() / 8), same device).
void PackSignsInto(const at::Tensor& x, at::Tensor& bits);
// out (contiguous float32, n elements) (+)= bit ? s : -s, s = scales[i / block];
// scales: float32 with ceil(n / block) elements, block a multiple of 8.
void UnpackSigns(const at::Tensor& bits, const at::Tensor& scales, int64_t block, at::Tensor& out, bool accumulate);
// out = (the sum over r, in order, of UnpackSigns(bits[r], scales[r])) / divisor,
// in one pass writing out (what an all-gather of 1-bit messages needs).
void UnpackSignsSum(const std::vector<at::Tensor>& bits, const std::vector<at::Tensor>& scales, int64_t block,
                    double divisor, at::Tensor& out);
// The per-block scales of 1-bit compression into `scales` (float32,
// ceil(n / block); the last block may be shorter): mean(|x|) for p = 1 (the
// s minimising ||x - s sign(x)||), sqrt(mean(x^2)) for p = 2 (DeepSpeed's).
void BlockScales(const at::Tensor& x, int64_t block, int p, at::Tensor& scales);
// BlockScales and PackSignsInto together; on the CPU in one pass over x, which
// is what 1-bit compression needs (block: a multiple of 8).
void PackSignsWithScales(const at::Tensor& x, int64_t block, int p, at::Tensor& scales, at::Tensor& bits);
// Error feedback fused with it: x = g + e (e undefined: zero) is encoded as
// PackSignsWithScales does, and `residual` (n floats; may be e itself)
// receives x - decode, the next residual. On the CPU one pass over g and e.
void PackSignsWithFeedback(const at::Tensor& g, const at::Tensor& e, at::Tensor& residual, int64_t block, int p,
                           at::Tensor& scales, at::Tensor& bits);

}  // namespace lowbit::kernels
