#include "lowbit/kernels/sign.h"

#include <ATen/ATen.h>

#include "lowbit/kernels/cpu/sign.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {

at::Tensor PackSigns(const at::Tensor& x) {
  at::Tensor bits = at::empty({(x.numel() + 7) / 8}, x.options().dtype(at::kByte));
  PackSignsInto(x, bits);
  return bits;
}

void PackSignsInto(const at::Tensor& x, at::Tensor& bits) {
  internal::CheckTensor("PackSigns", "x", x, at::kFloat);
  internal::CheckTensor("PackSigns", "bits", bits, at::kByte);
  internal::CheckNumel("PackSigns", "bits", bits, (x.numel() + 7) / 8);
  internal::CheckSameDevice("PackSigns", x, bits);
  if (x.is_cuda()) return internal::PackSignsCuda(x, bits);
  cpu::PackSigns(x.data_ptr<float>(), x.numel(), bits.data_ptr<uint8_t>());
}

void UnpackSigns(const at::Tensor& bits, float scale, at::Tensor& out, bool accumulate) {
  internal::CheckTensor("UnpackSigns", "bits", bits, at::kByte);
  internal::CheckTensor("UnpackSigns", "out", out, at::kFloat);
  internal::CheckNumel("UnpackSigns", "bits", bits, (out.numel() + 7) / 8);
  internal::CheckSameDevice("UnpackSigns", bits, out);
  if (out.is_cuda()) return internal::UnpackSignsCuda(bits, scale, out, accumulate);
  cpu::UnpackSigns(bits.data_ptr<uint8_t>(), out.numel(), scale, out.data_ptr<float>(), accumulate);
}

}  // namespace lowbit::kernels
