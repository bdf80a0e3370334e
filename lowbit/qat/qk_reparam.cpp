#include "lowbit/qat/qk_reparam.h"

#include <torch/torch.h>

#include "lowbit/base/error.h"

namespace lowbit::qat {

at::Tensor QkReparamScores(const at::Tensor& x, const at::Tensor& w_qkv, const at::Tensor& b_qkv, int64_t n_head,
                           FakeQuantizerImpl* quantizer) {
  LOWBIT_CHECK(x.dim() == 3, "QkReparamScores: x must be [B, T, C], got ", x.sizes());
  const int64_t C = x.size(2);
  LOWBIT_CHECK(n_head >= 1 && C % n_head == 0, "QkReparamScores: C (", C, ") must divide by n_head (", n_head, ")");
  LOWBIT_CHECK(w_qkv.dim() == 2 && w_qkv.size(0) >= 2 * C && w_qkv.size(1) == C,
               "QkReparamScores: w_qkv must be [>= 2C, C] = [>= ", 2 * C, ", ", C, "], got ", w_qkv.sizes());
  const int64_t hd = C / n_head;
  const at::Tensor wq = w_qkv.narrow(0, 0, C).view({n_head, hd, C});
  const at::Tensor wk = w_qkv.narrow(0, C, C).view({n_head, hd, C});
  at::Tensor m = torch::matmul(wq.transpose(1, 2), wk);  // [H, C, C]: M_h = W_q,h^T W_k,h
  if (quantizer != nullptr) m = quantizer->forward(m.reshape({n_head * C, C})).view({n_head, C, C});
  const at::Tensor xh = x.unsqueeze(1);                                      // [B, 1, T, C]
  at::Tensor s = torch::matmul(torch::matmul(xh, m), xh.transpose(-2, -1));  // [B, H, T, T]
  if (b_qkv.defined()) {
    const at::Tensor bq = b_qkv.narrow(0, 0, C).view({n_head, hd});
    const at::Tensor bk = b_qkv.narrow(0, C, C).view({n_head, hd});
    const at::Tensor q_nobias = torch::matmul(xh, wq.transpose(1, 2));  // [B, H, T, hd]
    const at::Tensor k_nobias = torch::matmul(xh, wk.transpose(1, 2));
    s = s + torch::matmul(q_nobias, bk.view({1, n_head, hd, 1}));                    // per query row
    s = s + torch::matmul(bq.view({1, n_head, 1, hd}), k_nobias.transpose(-2, -1));  // per key column
    s = s + (bq * bk).sum(1).view({1, n_head, 1, 1});
  }
  return s;
}

}  // namespace lowbit::qat
