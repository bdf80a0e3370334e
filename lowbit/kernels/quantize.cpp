#include "lowbit/kernels/quantize.h"

#include <ATen/ATen.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/quantize.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {

void CheckQuantSpec(const QuantSpec& spec) {
  LOWBIT_CHECK(spec.bits >= 1 && spec.bits <= 8, "quantization bits must be in [1, 8], got ", spec.bits);
  LOWBIT_CHECK(spec.levels >= 1 && spec.levels < (1 << spec.bits), "quantization levels must be in [1, ",
               (1 << spec.bits) - 1, "] for ", spec.bits, " bits, got ", spec.levels);
  LOWBIT_CHECK(spec.block >= 1, "quantization block must be >= 1, got ", spec.block);
}

namespace {

// The checks QuantizeBlockwise and DequantizeBlockwise share: codes and
// scales sized for n elements, on the device of `data` (x or out).
void CheckCoded(const char* op, const at::Tensor& data, const at::Tensor& scales, const at::Tensor& codes,
                const QuantSpec& spec) {
  CheckQuantSpec(spec);
  internal::CheckTensor(op, "scales", scales, at::kFloat);
  internal::CheckTensor(op, "codes", codes, at::kByte);
  internal::CheckNumel(op, "scales", scales, NumBlocks(data.numel(), spec));
  internal::CheckNumel(op, "codes", codes, PackedCodeBytes(data.numel(), spec));
  internal::CheckSameDevice(op, data, codes);
  internal::CheckSameDevice(op, data, scales);
}

}  // namespace

int64_t NumBlocks(int64_t n, const QuantSpec& spec) { return (n + spec.block - 1) / spec.block; }

int64_t PackedCodeBytes(int64_t n, const QuantSpec& spec) { return cpu::PackedCodeBytes(n, spec.bits); }

void BlockAbsMax(const at::Tensor& x, int64_t block, at::Tensor& scales) {
  internal::CheckTensor("BlockAbsMax", "x", x, at::kFloat);
  internal::CheckTensor("BlockAbsMax", "scales", scales, at::kFloat);
  LOWBIT_CHECK(block >= 1, "BlockAbsMax: block must be >= 1, got ", block);
  internal::CheckNumel("BlockAbsMax", "scales", scales, (x.numel() + block - 1) / block);
  internal::CheckSameDevice("BlockAbsMax", x, scales);
  if (x.is_cuda()) return internal::BlockAbsMaxCuda(x, block, scales);
  cpu::BlockAbsMax(x.data_ptr<float>(), x.numel(), block, scales.data_ptr<float>());
}

void QuantizeBlockwise(const at::Tensor& x, const at::Tensor& scales, const QuantSpec& spec, uint64_t key,
                       int64_t index_base, at::Tensor& codes) {
  internal::CheckTensor("QuantizeBlockwise", "x", x, at::kFloat);
  CheckCoded("QuantizeBlockwise", x, scales, codes, spec);
  if (x.is_cuda()) return internal::QuantizeBlockwiseCuda(x, scales, spec, key, index_base, codes);
  cpu::QuantizeBlockwise(x.data_ptr<float>(), x.numel(), spec.block, scales.data_ptr<float>(), spec.bits,
                         spec.levels, spec.stochastic, key, index_base, codes.data_ptr<uint8_t>());
}

void AbsMaxQuantizeBlockwise(const at::Tensor& x, const QuantSpec& spec, uint64_t key, int64_t index_base,
                             at::Tensor& scales, at::Tensor& codes) {
  internal::CheckTensor("AbsMaxQuantizeBlockwise", "x", x, at::kFloat);
  CheckCoded("AbsMaxQuantizeBlockwise", x, scales, codes, spec);
  if (x.is_cuda()) {
    internal::BlockAbsMaxCuda(x, spec.block, scales);
    return internal::QuantizeBlockwiseCuda(x, scales, spec, key, index_base, codes);
  }
  cpu::AbsMaxQuantizeBlockwise(x.data_ptr<float>(), x.numel(), spec.block, spec.bits, spec.levels, spec.stochastic,
                               key, index_base, scales.data_ptr<float>(), codes.data_ptr<uint8_t>());
}

void QuantizeWithFeedback(const at::Tensor& g, const at::Tensor& e, at::Tensor& residual, const QuantSpec& spec,
                          uint64_t key, int64_t index_base, at::Tensor& scales, at::Tensor& codes) {
  const char* op = "QuantizeWithFeedback";
  internal::CheckTensor(op, "g", g, at::kFloat);
  internal::CheckTensor(op, "residual", residual, at::kFloat);
  internal::CheckNumel(op, "residual", residual, g.numel());
  internal::CheckSameDevice(op, g, residual);
  if (e.defined()) {
    internal::CheckTensor(op, "e", e, at::kFloat);
    internal::CheckNumel(op, "e", e, g.numel());
    internal::CheckSameDevice(op, g, e);
  }
  CheckCoded(op, g, scales, codes, spec);
  if (g.is_cuda()) {
    residual.copy_(e.defined() ? g + e : g);
    AbsMaxQuantizeBlockwise(residual, spec, key, index_base, scales, codes);
    at::Tensor sent = at::empty_like(residual);
    DequantizeBlockwise(codes, scales, spec, sent, /*accumulate=*/false);
    residual.sub_(sent);
    return;
  }
  cpu::QuantizeWithFeedback(g.data_ptr<float>(), e.defined() ? e.data_ptr<float>() : nullptr,
                            residual.data_ptr<float>(), g.numel(), spec.block, spec.bits, spec.levels,
                            spec.stochastic, key, index_base, scales.data_ptr<float>(), codes.data_ptr<uint8_t>());
}

void DequantizeBlockwise(const at::Tensor& codes, const at::Tensor& scales, const QuantSpec& spec,
                         at::Tensor& out, bool accumulate) {
  internal::CheckTensor("DequantizeBlockwise", "out", out, at::kFloat);
  CheckCoded("DequantizeBlockwise", out, scales, codes, spec);
  if (out.is_cuda()) return internal::DequantizeBlockwiseCuda(codes, scales, spec, out, accumulate);
  cpu::DequantizeBlockwise(codes.data_ptr<uint8_t>(), scales.data_ptr<float>(), out.numel(), spec.block,
                           spec.bits, spec.levels, out.data_ptr<float>(), accumulate);
}

}  // namespace lowbit::kernels
