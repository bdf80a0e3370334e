#include "lowbit/kernels/optim8bit.h"

#include <ATen/ATen.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/optim8bit.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {
namespace internal {

const DynamicCode& HostDynamicCode(bool is_signed) {
  static const DynamicCode* codes = [] {
    static DynamicCode built[2];
    for (int s = 0; s < 2; ++s) {
      LOWBIT_CHECK(cpu::BuildDynamicCode(s == 1, &built[s]), "lowbit internal error: the ",
                   s == 1 ? "signed" : "unsigned", " dynamic map has two midpoints in one encoding cell");
    }
    return built;
  }();
  return codes[is_signed ? 1 : 0];
}

}  // namespace internal

namespace {

const char* RuleName(OptimRule rule) {
  switch (rule) {
    case OptimRule::kAdam: return "Adam";
    case OptimRule::kSgd: return "SGD";
    case OptimRule::kLion: return "Lion";
    case OptimRule::kRmsprop: return "RMSprop";
    case OptimRule::kAdagrad: return "Adagrad";
  }
  return "unknown";
}

void CheckState(const char* name, const OptimState& s, const at::Tensor& param, int64_t block) {
  const int64_t n = param.numel();
  if (s.quantized()) {
    internal::CheckTensor("FusedOptimizerStep", name, s.codes, at::kByte);
    internal::CheckTensor("FusedOptimizerStep", name, s.absmax, at::kFloat);
    internal::CheckNumel("FusedOptimizerStep", name, s.codes, n);
    internal::CheckNumel("FusedOptimizerStep", name, s.absmax, NumOptimBlocks(n, block));
    internal::CheckSameDevice("FusedOptimizerStep", param, s.codes);
    internal::CheckSameDevice("FusedOptimizerStep", param, s.absmax);
  } else {
    internal::CheckTensor("FusedOptimizerStep", name, s.values, at::kFloat);
    internal::CheckNumel("FusedOptimizerStep", name, s.values, n);
    internal::CheckSameDevice("FusedOptimizerStep", param, s.values);
  }
}

}  // namespace

void CheckOptimBlock(int64_t block) {
  LOWBIT_CHECK(IsOptimBlock(block), "8-bit optimizer block size must be a power of two in [", kMinOptimBlock, ", ",
               kMaxOptimBlock, "], got ", block);
}

int64_t NumOptimBlocks(int64_t n, int64_t block) { return (n + block - 1) / block; }

namespace {

// What QuantizeDynamic and DequantizeDynamic check: `data` (x or out) float,
// codes uint8 with its numel, absmax float with one per block, one device.
void CheckDynamic(const char* op, const char* name, const at::Tensor& data, const at::Tensor& absmax,
                  const at::Tensor& codes, int64_t block) {
  CheckOptimBlock(block);
  internal::CheckTensor(op, name, data, at::kFloat);
  internal::CheckTensor(op, "absmax", absmax, at::kFloat);
  internal::CheckTensor(op, "codes", codes, at::kByte);
  internal::CheckNumel(op, "absmax", absmax, NumOptimBlocks(data.numel(), block));
  internal::CheckNumel(op, "codes", codes, data.numel());
  internal::CheckSameDevice(op, data, absmax);
  internal::CheckSameDevice(op, data, codes);
}

}  // namespace

at::Tensor DynamicMap(bool is_signed) {
  const DynamicCode& code = internal::HostDynamicCode(is_signed);
  return at::from_blob(const_cast<float*>(code.values), {256}, at::kFloat).clone();
}

void QuantizeDynamic(const at::Tensor& x, bool is_signed, int64_t block, at::Tensor& absmax, at::Tensor& codes) {
  CheckDynamic("QuantizeDynamic", "x", x, absmax, codes, block);
  if (x.is_cuda()) return internal::QuantizeDynamicCuda(x, is_signed, block, absmax, codes);
  cpu::QuantizeDynamic(x.data_ptr<float>(), x.numel(), block, internal::HostDynamicCode(is_signed),
                       absmax.data_ptr<float>(), codes.data_ptr<uint8_t>());
}

void DequantizeDynamic(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed, int64_t block,
                       at::Tensor& out) {
  CheckDynamic("DequantizeDynamic", "out", out, absmax, codes, block);
  if (out.is_cuda()) return internal::DequantizeDynamicCuda(codes, absmax, is_signed, block, out);
  cpu::DequantizeDynamic(codes.data_ptr<uint8_t>(), absmax.data_ptr<float>(), out.numel(), block,
                         internal::HostDynamicCode(is_signed), out.data_ptr<float>());
}

void FusedOptimizerStep(const OptimStepArgs& args, at::Tensor& param, const at::Tensor& grad, OptimState* m,
                        OptimState* v, int64_t block) {
  internal::CheckTensor("FusedOptimizerStep", "param", param, at::kFloat);
  internal::CheckTensor("FusedOptimizerStep", "grad", grad, at::kFloat);
  internal::CheckNumel("FusedOptimizerStep", "grad", grad, param.numel());
  internal::CheckSameDevice("FusedOptimizerStep", param, grad);
  const bool quantized = (m != nullptr && m->quantized()) || (v != nullptr && v->quantized());
  LOWBIT_CHECK(m == nullptr || v == nullptr || m->quantized() == v->quantized(), "FusedOptimizerStep: m is ",
               m != nullptr && m->quantized() ? "8-bit" : "fp32", " but v is ",
               v != nullptr && v->quantized() ? "8-bit" : "fp32", "; both must be the same");
  if (quantized) CheckOptimBlock(block);
  if (m != nullptr) CheckState("m", *m, param, block);
  if (v != nullptr) CheckState("v", *v, param, block);
  const bool known = internal::DispatchRule(args.rule, m != nullptr, v != nullptr, [](auto, auto, auto) {});
  LOWBIT_CHECK(known, "FusedOptimizerStep: ", RuleName(args.rule), " does not take ", m != nullptr ? "a" : "no",
               " first state (m) and ", v != nullptr ? "a" : "no", " second state (v)");
  if (param.is_cuda()) return internal::FusedOptimizerStepCuda(args, param, grad, m, v, block);
  if (quantized) {
    cpu::OptimizerStep8bit(args, param.data_ptr<float>(), grad.data_ptr<float>(), param.numel(), block,
                           m ? m->codes.data_ptr<uint8_t>() : nullptr, m ? m->absmax.data_ptr<float>() : nullptr,
                           v ? v->codes.data_ptr<uint8_t>() : nullptr, v ? v->absmax.data_ptr<float>() : nullptr,
                           internal::HostDynamicCode(true), internal::HostDynamicCode(false));
  } else {
    cpu::OptimizerStep32bit(args, param.data_ptr<float>(), grad.data_ptr<float>(), param.numel(),
                            m ? m->values.data_ptr<float>() : nullptr, v ? v->values.data_ptr<float>() : nullptr);
  }
}

}  // namespace lowbit::kernels
