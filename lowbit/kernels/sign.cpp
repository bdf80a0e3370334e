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

void UnpackSigns(const at::Tensor& bits, const at::Tensor& scales, int64_t block, at::Tensor& out, bool accumulate) {
  internal::CheckTensor("UnpackSigns", "bits", bits, at::kByte);
  internal::CheckTensor("UnpackSigns", "scales", scales, at::kFloat);
  internal::CheckTensor("UnpackSigns", "out", out, at::kFloat);
  TORCH_CHECK(block >= 8 && block % 8 == 0, "UnpackSigns: block must be a positive multiple of 8, got ", block);
  internal::CheckNumel("UnpackSigns", "bits", bits, (out.numel() + 7) / 8);
  internal::CheckNumel("UnpackSigns", "scales", scales, (out.numel() + block - 1) / block);
  internal::CheckSameDevice("UnpackSigns", bits, out);
  internal::CheckSameDevice("UnpackSigns", scales, out);
  if (out.is_cuda()) return internal::UnpackSignsCuda(bits, scales, block, out, accumulate);
  cpu::UnpackSigns(bits.data_ptr<uint8_t>(), out.numel(), scales.data_ptr<float>(), block, out.data_ptr<float>(),
                   accumulate);
}

void BlockScales(const at::Tensor& x, int64_t block, int p, at::Tensor& scales) {
  internal::CheckTensor("BlockScales", "x", x, at::kFloat);
  internal::CheckTensor("BlockScales", "scales", scales, at::kFloat);
  TORCH_CHECK(block >= 1, "BlockScales: block must be >= 1, got ", block);
  TORCH_CHECK(p == 1 || p == 2, "BlockScales: p must be 1 or 2, got ", p);
  const int64_t n = x.numel();
  const int64_t nblocks = (n + block - 1) / block;
  internal::CheckNumel("BlockScales", "scales", scales, nblocks);
  if (n == 0) return;
  auto scale_rows = [p](const at::Tensor& rows) {  // rows: (k, len) -> (k)
    return p == 1 ? rows.abs().mean(1) : rows.pow(2).mean(1).sqrt_();
  };
  const int64_t full = n / block;
  if (full > 0) scales.narrow(0, 0, full).copy_(scale_rows(x.narrow(0, 0, full * block).view({full, block})));
  if (full < nblocks) scales.narrow(0, full, 1).copy_(scale_rows(x.narrow(0, full * block, n - full * block).view({1, -1})));
}

}  // namespace lowbit::kernels
