// Blockwise uniform quantization with stochastic rounding (QSGD, TernGrad),
// CPU or CUDA. The format is described in kernels/cpu/quantize.h.
//
//   QuantSpec spec{/*bits=*/4, /*levels=*/15, /*block=*/256, /*stochastic=*/true};
//   at::Tensor scales = at::empty({NumBlocks(n, spec)});
//   at::Tensor codes = at::empty({PackedCodeBytes(n, spec)}, at::kByte);
//   BlockAbsMax(x, spec.block, scales);
//   QuantizeBlockwise(x, scales, spec, key, /*index_base=*/0, codes);
//   DequantizeBlockwise(codes, scales, spec, y, /*accumulate=*/false);
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace lowbit::kernels {

struct QuantSpec {
  int bits = 8;        // storage bits per code, 1..8
  int levels = 255;    // intervals between -s and s; codes are 0..levels
  int64_t block = 256; // elements per scale
  bool stochastic = true;
};

// Checks the spec, naming the field and the value seen.
void CheckQuantSpec(const QuantSpec& spec);
int64_t NumBlocks(int64_t n, const QuantSpec& spec);
int64_t PackedCodeBytes(int64_t n, const QuantSpec& spec);

void BlockAbsMax(const at::Tensor& x, int64_t block, at::Tensor& scales);
// `key` and `index_base + i` seed element i's rounding (kernels/internal/counter_rng.h).
void QuantizeBlockwise(const at::Tensor& x, const at::Tensor& scales, const QuantSpec& spec, uint64_t key,
                       int64_t index_base, at::Tensor& codes);
// BlockAbsMax into `scales`, then QuantizeBlockwise: on the CPU in one pass
// over x, which is what QSGD's compression needs.
void AbsMaxQuantizeBlockwise(const at::Tensor& x, const QuantSpec& spec, uint64_t key, int64_t index_base,
                             at::Tensor& scales, at::Tensor& codes);
// Error feedback fused with it: x = g + e (e undefined: zero) is encoded as
// AbsMaxQuantizeBlockwise does, and `residual` (may be e itself) receives
// x - decode, the next residual. On the CPU one pass over g and e.
void QuantizeWithFeedback(const at::Tensor& g, const at::Tensor& e, at::Tensor& residual, const QuantSpec& spec,
                          uint64_t key, int64_t index_base, at::Tensor& scales, at::Tensor& codes);
// Decodes out.numel() elements.
void DequantizeBlockwise(const at::Tensor& codes, const at::Tensor& scales, const QuantSpec& spec,
                         at::Tensor& out, bool accumulate);

}  // namespace lowbit::kernels
