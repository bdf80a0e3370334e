// A decoder-only transformer (GPT-2's layout, as nanoGPT writes it) in
// LibTorch C++, written the ordinary way with typed members: token and
// learned position embeddings, n_layer pre-LayerNorm blocks of causal
// multi-head self-attention and a 4x GELU MLP, a final LayerNorm, and an
// output head tied to the token embedding.
//
// The four projections of each block (attn.c_attn, attn.c_proj, mlp.c_fc,
// mlp.c_proj) are lowbit::qat::Linear: torch's Linear until --qat's Prepare
// configures them. The embeddings, the LayerNorms and the tied head (a
// matmul with wte's weight) stay fp32, as is usual for QAT of transformers.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "lowbit/qat/quant_modules.h"
#include "lowbit/qat/quantizer_config.h"

namespace lowbit::examples::gpt {

struct GptConfig {
  int64_t vocab_size = 0;
  int64_t block_size = 64;  // the longest context
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  double dropout = 0.0;
};

// "tiny" (4 layers, 4 heads, 128 wide, block 64: nanoGPT's baby GPT) or
// "small" (6, 6, 384, block 128: nanoGPT's shakespeare_char); vocab_size 0.
// Throws naming the preset otherwise.
GptConfig GptPreset(const std::string& name);

// The first setting that makes no model, as "--n_embd must be ..., got ...";
// empty when the config is valid.
std::string ValidateGptConfig(const GptConfig& config);

// Causal multi-head self-attention, written out: q k^T / sqrt(d), the future
// masked to -inf, softmax, times v (LibTorch 1.13 has no fused attention).
class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GptConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, T, C] -> [B, T, C]

  lowbit::qat::Linear c_attn{nullptr}, c_proj{nullptr};
  torch::nn::Dropout attn_dropout{nullptr}, resid_dropout{nullptr};
  // OFQ's query-key reparameterisation (qat/qk_reparam.h): the scores come
  // from each head's W_q^T W_k quantized by this weight quantizer; null: off.
  lowbit::qat::FakeQuantizer qk_quantizer{nullptr};
  void EnableQkReparam(const lowbit::qat::QuantizerConfig& weight);

 private:
  int64_t n_head_, n_embd_;
  at::Tensor future_;  // [block, block] bool, true above the diagonal; not state
};
TORCH_MODULE(CausalSelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const GptConfig& config);
  at::Tensor forward(const at::Tensor& x);

  lowbit::qat::Linear c_fc{nullptr}, c_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const GptConfig& config);
  at::Tensor forward(const at::Tensor& x);  // x + attn(ln_1(x)), then + mlp(ln_2(.))

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  CausalSelfAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

class GptImpl : public torch::nn::Module {
 public:
  // nanoGPT's initialisation: weights N(0, 0.02), the residual projections
  // N(0, 0.02 / sqrt(2 n_layer)), biases zero. Throws on an invalid config.
  explicit GptImpl(const GptConfig& config);
  // idx: int64 [B, T] with T <= block_size -> logits [B, T, vocab_size].
  at::Tensor forward(const at::Tensor& idx);
  // Mean cross-entropy of next-token prediction, in nats per token.
  at::Tensor Loss(const at::Tensor& idx, const at::Tensor& targets);

  const GptConfig& config() const { return config_; }
  // Every block's attention scores from its quantized W_q^T W_k (OFQ's
  // query-key reparameterisation), quantized as `weight` says. After
  // qat::Prepare; before the optimizer and DDP (it adds quantizer state).
  void EnableQkReparam(const lowbit::qat::QuantizerConfig& weight);

  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  GptConfig config_;
};
TORCH_MODULE(Gpt);

// Continues `prompt` (int64 [T0], T0 >= 1) by `length` tokens sampled at
// `temperature` from the model's last block_size tokens, with a generator
// seeded by `seed`. Runs in eval mode without gradients, restoring the mode.
at::Tensor Sample(Gpt& model, const at::Tensor& prompt, int64_t length, double temperature, uint64_t seed);

}  // namespace lowbit::examples::gpt
