// OFQ's query-key reparameterisation (Liu et al. 2023, "Oscillation-free
// Quantization for Low-bit Vision Transformers", Sec. 4.3): instead of
// quantizing W_q and W_k apart, whose errors multiply in q k^T and make both
// oscillate, each head's product M_h = W_q,h^T W_k,h (C x C) is quantized as
// one weight, and the scores are computed from it:
//   S_h = x Q(M_h) x^T + (x W_q,h^T) b_k,h 1^T + 1 (b_q,h^T W_k,h x^T) + b_q,h . b_k,h
// which is (x W_q,h^T + b_q,h)(x W_k,h^T + b_k,h)^T exactly when Q is the
// identity. The stacked [H C, C] products are quantized by `quantizer` as a
// weight (per-channel scales: one per row of each M_h).
//
//   // c_attn: the fused [3C, C] query/key/value projection of a GPT block.
//   at::Tensor scores = lowbit::qat::QkReparamScores(xq, c_attn->weight, c_attn->bias, n_head, qk_quantizer.get());
//   // [B, H, T, T], before the 1/sqrt(head dim) scaling.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "lowbit/qat/fake_quantizer.h"

namespace lowbit::qat {

// x: [B, T, C]; w_qkv: [3C, C] (query rows, then key rows, then value rows);
// b_qkv: [3C] or undefined; quantizer: a weight FakeQuantizer over the
// [n_head * C, C] product stack (SetWeightShape(n_head * C, C)), or null for
// no quantization. C must divide by n_head.
at::Tensor QkReparamScores(const at::Tensor& x, const at::Tensor& w_qkv, const at::Tensor& b_qkv, int64_t n_head,
                           FakeQuantizerImpl* quantizer);

}  // namespace lowbit::qat
