// Sign packing for 1-bit compression (signSGD, 1-bit Adam), CPU or CUDA.
//
//   at::Tensor bits = lowbit::kernels::PackSigns(x);          // ceil(n/8) bytes
//   at::Tensor y = at::empty_like(x);
//   lowbit::kernels::UnpackSigns(bits, scale, y, /*accumulate=*/false);  // y = ±scale
//
// Element 8j + k is bit k of byte j, set when x >= 0 (sign(0) = +1).
#pragma once

#include <ATen/core/Tensor.h>

namespace lowbit::kernels {

// x: contiguous float32. Returns uint8 of ceil(n / 8) on x's device.
at::Tensor PackSigns(const at::Tensor& x);
// Writes into `bits` (uint8, ceil(x.numel() / 8), same device).
void PackSignsInto(const at::Tensor& x, at::Tensor& bits);
// out (contiguous float32, n elements) (+)= bit ? scale : -scale.
void UnpackSigns(const at::Tensor& bits, float scale, at::Tensor& out, bool accumulate);

}  // namespace lowbit::kernels
