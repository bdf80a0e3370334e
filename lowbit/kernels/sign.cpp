#include "lowbit/kernels/sign.h"

#include <ATen/ATen.h>

#include "lowbit/base/error.h"
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
  LOWBIT_CHECK(block >= 8 && block % 8 == 0, "UnpackSigns: block must be a positive multiple of 8, got ", block);
  internal::CheckNumel("UnpackSigns", "bits", bits, (out.numel() + 7) / 8);
  internal::CheckNumel("UnpackSigns", "scales", scales, (out.numel() + block - 1) / block);
  internal::CheckSameDevice("UnpackSigns", bits, out);
  internal::CheckSameDevice("UnpackSigns", scales, out);
  if (out.is_cuda()) return internal::UnpackSignsCuda(bits, scales, block, out, accumulate);
  cpu::UnpackSigns(bits.data_ptr<uint8_t>(), out.numel(), scales.data_ptr<float>(), block, out.data_ptr<float>(),
                   accumulate);
}

void UnpackSignsSum(const std::vector<at::Tensor>& bits, const std::vector<at::Tensor>& scales, int64_t block,
                    double divisor, at::Tensor& out) {
  LOWBIT_CHECK(!bits.empty() && bits.size() == scales.size(), "UnpackSignsSum: needs as many scales (", scales.size(),
               ") as bit vectors (", bits.size(), "), at least one");
  LOWBIT_CHECK(divisor > 0, "UnpackSignsSum: divisor must be > 0, got ", divisor);
  if (out.is_cuda()) {
    for (size_t r = 0; r < bits.size(); ++r) UnpackSigns(bits[r], scales[r], block, out, /*accumulate=*/r > 0);
    if (divisor != 1.0) out.div_(divisor);
    return;
  }
  internal::CheckTensor("UnpackSignsSum", "out", out, at::kFloat);
  LOWBIT_CHECK(block >= 8 && block % 8 == 0, "UnpackSignsSum: block must be a positive multiple of 8, got ", block);
  std::vector<const uint8_t*> bit_ptrs;
  std::vector<const float*> scale_ptrs;
  for (size_t r = 0; r < bits.size(); ++r) {
    internal::CheckTensor("UnpackSignsSum", "bits", bits[r], at::kByte);
    internal::CheckTensor("UnpackSignsSum", "scales", scales[r], at::kFloat);
    internal::CheckNumel("UnpackSignsSum", "bits", bits[r], (out.numel() + 7) / 8);
    internal::CheckNumel("UnpackSignsSum", "scales", scales[r], (out.numel() + block - 1) / block);
    internal::CheckSameDevice("UnpackSignsSum", bits[r], out);
    internal::CheckSameDevice("UnpackSignsSum", scales[r], out);
    bit_ptrs.push_back(bits[r].data_ptr<uint8_t>());
    scale_ptrs.push_back(scales[r].data_ptr<float>());
  }
  cpu::UnpackSignsSum(bit_ptrs.data(), scale_ptrs.data(), static_cast<int>(bits.size()), out.numel(), block,
                      static_cast<float>(divisor), out.data_ptr<float>());
}

void BlockScales(const at::Tensor& x, int64_t block, int p, at::Tensor& scales) {
  internal::CheckTensor("BlockScales", "x", x, at::kFloat);
  internal::CheckTensor("BlockScales", "scales", scales, at::kFloat);
  LOWBIT_CHECK(block >= 1, "BlockScales: block must be >= 1, got ", block);
  LOWBIT_CHECK(p == 1 || p == 2, "BlockScales: p must be 1 or 2, got ", p);
  const int64_t n = x.numel();
  const int64_t nblocks = (n + block - 1) / block;
  internal::CheckNumel("BlockScales", "scales", scales, nblocks);
  if (n == 0) return;
  internal::CheckSameDevice("BlockScales", x, scales);
  if (!x.is_cuda()) return cpu::BlockScales(x.data_ptr<float>(), n, block, p, scales.data_ptr<float>());
  auto scale_rows = [p](const at::Tensor& rows) {  // rows: (k, len) -> (k)
    return p == 1 ? rows.abs().mean(1) : rows.pow(2).mean(1).sqrt_();
  };
  const int64_t full = n / block;
  if (full > 0) scales.narrow(0, 0, full).copy_(scale_rows(x.narrow(0, 0, full * block).view({full, block})));
  if (full < nblocks) scales.narrow(0, full, 1).copy_(scale_rows(x.narrow(0, full * block, n - full * block).view({1, -1})));
}

void PackSignsWithScales(const at::Tensor& x, int64_t block, int p, at::Tensor& scales, at::Tensor& bits) {
  internal::CheckTensor("PackSignsWithScales", "x", x, at::kFloat);
  LOWBIT_CHECK(block >= 8 && block % 8 == 0, "PackSignsWithScales: block must be a positive multiple of 8, got ",
               block);
  if (x.is_cuda()) {
    BlockScales(x, block, p, scales);
    return PackSignsInto(x, bits);
  }
  internal::CheckTensor("PackSignsWithScales", "scales", scales, at::kFloat);
  internal::CheckTensor("PackSignsWithScales", "bits", bits, at::kByte);
  LOWBIT_CHECK(p == 1 || p == 2, "PackSignsWithScales: p must be 1 or 2, got ", p);
  internal::CheckNumel("PackSignsWithScales", "scales", scales, (x.numel() + block - 1) / block);
  internal::CheckNumel("PackSignsWithScales", "bits", bits, (x.numel() + 7) / 8);
  internal::CheckSameDevice("PackSignsWithScales", x, scales);
  internal::CheckSameDevice("PackSignsWithScales", x, bits);
  cpu::PackSignsWithScales(x.data_ptr<float>(), x.numel(), block, p, scales.data_ptr<float>(),
                           bits.data_ptr<uint8_t>());
}

void PackSignsWithFeedback(const at::Tensor& g, const at::Tensor& e, at::Tensor& residual, int64_t block, int p,
                           at::Tensor& scales, at::Tensor& bits) {
  const char* op = "PackSignsWithFeedback";
  internal::CheckTensor(op, "g", g, at::kFloat);
  internal::CheckTensor(op, "residual", residual, at::kFloat);
  internal::CheckNumel(op, "residual", residual, g.numel());
  internal::CheckSameDevice(op, g, residual);
  if (e.defined()) {
    internal::CheckTensor(op, "e", e, at::kFloat);
    internal::CheckNumel(op, "e", e, g.numel());
    internal::CheckSameDevice(op, g, e);
  }
  if (g.is_cuda()) {
    residual.copy_(e.defined() ? g + e : g);
    PackSignsWithScales(residual, block, p, scales, bits);
    at::Tensor sent = at::empty_like(residual);
    UnpackSigns(bits, scales, block, sent, /*accumulate=*/false);
    residual.sub_(sent);
    return;
  }
  LOWBIT_CHECK(block >= 8 && block % 8 == 0, op, ": block must be a positive multiple of 8, got ", block);
  LOWBIT_CHECK(p == 1 || p == 2, op, ": p must be 1 or 2, got ", p);
  internal::CheckTensor(op, "scales", scales, at::kFloat);
  internal::CheckTensor(op, "bits", bits, at::kByte);
  internal::CheckNumel(op, "scales", scales, (g.numel() + block - 1) / block);
  internal::CheckNumel(op, "bits", bits, (g.numel() + 7) / 8);
  internal::CheckSameDevice(op, g, scales);
  internal::CheckSameDevice(op, g, bits);
  cpu::PackSignsWithFeedback(g.data_ptr<float>(), e.defined() ? e.data_ptr<float>() : nullptr,
                             residual.data_ptr<float>(), g.numel(), block, p, scales.data_ptr<float>(),
                             bits.data_ptr<uint8_t>());
}

}  // namespace lowbit::kernels
