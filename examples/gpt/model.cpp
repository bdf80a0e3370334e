#include "examples/gpt/model.h"

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/qat/qk_reparam.h"

namespace lowbit::examples::gpt {

namespace nn = torch::nn;

GptConfig GptPreset(const std::string& name) {
  GptConfig c;
  if (name == "tiny") return c;
  if (name == "medium") {  // issue 33's larger transformer: 4.77M parameters, tiny's context
    c.n_layer = 6;
    c.n_head = 8;
    c.n_embd = 256;
    return c;
  }
  if (name == "small") {
    c.n_layer = 6;
    c.n_head = 6;
    c.n_embd = 384;
    c.block_size = 128;
    return c;
  }
  LOWBIT_CHECK(false, "--preset must be tiny, medium or small, got '", name, "'");
}

std::string ValidateGptConfig(const GptConfig& c) {
  if (c.vocab_size < 1) return absl::StrCat("vocab_size must be >= 1, got ", c.vocab_size);
  if (c.block_size < 1) return absl::StrCat("--block_size must be >= 1, got ", c.block_size);
  if (c.n_layer < 1) return absl::StrCat("--n_layer must be >= 1, got ", c.n_layer);
  if (c.n_head < 1) return absl::StrCat("--n_head must be >= 1, got ", c.n_head);
  if (c.n_embd < 1 || c.n_embd % c.n_head != 0) {
    return absl::StrCat("--n_embd must be a positive multiple of --n_head (", c.n_head, "), got ", c.n_embd);
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) return absl::StrCat("--dropout must be in [0, 1), got ", c.dropout);
  return "";
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GptConfig& c) : n_head_(c.n_head), n_embd_(c.n_embd) {
  c_attn = register_module("c_attn", lowbit::qat::Linear(c.n_embd, 3 * c.n_embd));
  c_proj = register_module("c_proj", lowbit::qat::Linear(c.n_embd, c.n_embd));
  attn_dropout = register_module("attn_dropout", nn::Dropout(c.dropout));
  resid_dropout = register_module("resid_dropout", nn::Dropout(c.dropout));
  future_ = torch::ones({c.block_size, c.block_size}, torch::kBool).triu(1);
}

void CausalSelfAttentionImpl::EnableQkReparam(const lowbit::qat::QuantizerConfig& weight) {
  LOWBIT_CHECK(!qk_quantizer, "EnableQkReparam: enabled already");
  LOWBIT_CHECK(c_attn->configured(), "EnableQkReparam: call it after qat::Prepare (c_attn is not quantized)");
  const int64_t scales = weight.granularity == lowbit::qat::Granularity::kPerChannel ? n_head_ * n_embd_ : 1;
  qk_quantizer = register_module("qk_quantizer", lowbit::qat::FakeQuantizer(weight, scales, /*is_weight=*/true));
  qk_quantizer->SetWeightShape(n_head_ * n_embd_, n_embd_);
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), hd = n_embd_ / n_head_;
  std::vector<at::Tensor> qkv = c_attn(x).split(n_embd_, 2);
  auto heads = [&](const at::Tensor& t) { return t.view({B, T, n_head_, hd}).transpose(1, 2); };  // [B, H, T, hd]
  const at::Tensor v = heads(qkv[2]);
  at::Tensor att;
  if (qk_quantizer) {
    // The scores from the quantized input and each head's quantized W_q^T W_k.
    const at::Tensor xq =
        c_attn->input_quantizer ? c_attn->input_quantizer->forward(x.reshape({-1, C})).view(x.sizes()) : x;
    att = lowbit::qat::QkReparamScores(xq, c_attn->weight, c_attn->bias, n_head_, qk_quantizer.get());
  } else {
    att = torch::matmul(heads(qkv[0]), heads(qkv[1]).transpose(-2, -1));
  }
  att = att * (1.0 / std::sqrt(static_cast<double>(hd)));
  att = att.masked_fill(future_.narrow(0, 0, T).narrow(1, 0, T), -std::numeric_limits<float>::infinity());
  att = attn_dropout(torch::softmax(att, -1));
  const at::Tensor y = torch::matmul(att, v).transpose(1, 2).contiguous().view({B, T, C});
  return resid_dropout(c_proj(y));
}

MlpImpl::MlpImpl(const GptConfig& c) {
  c_fc = register_module("c_fc", lowbit::qat::Linear(c.n_embd, 4 * c.n_embd));
  c_proj = register_module("c_proj", lowbit::qat::Linear(4 * c.n_embd, c.n_embd));
  dropout = register_module("dropout", nn::Dropout(c.dropout));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) { return dropout(c_proj(torch::gelu(c_fc(x)))); }

BlockImpl::BlockImpl(const GptConfig& c) {
  ln_1 = register_module("ln_1", nn::LayerNorm(nn::LayerNormOptions({c.n_embd})));
  attn = register_module("attn", CausalSelfAttention(c));
  ln_2 = register_module("ln_2", nn::LayerNorm(nn::LayerNormOptions({c.n_embd})));
  mlp = register_module("mlp", Mlp(c));
}

at::Tensor BlockImpl::forward(const at::Tensor& x) {
  at::Tensor y = x + attn(ln_1(x));
  return y + mlp(ln_2(y));
}

void GptImpl::EnableQkReparam(const lowbit::qat::QuantizerConfig& weight) {
  for (const auto& block : *h) block->as<BlockImpl>()->attn->EnableQkReparam(weight);
}

GptImpl::GptImpl(const GptConfig& c) : config_(c) {
  const std::string invalid = ValidateGptConfig(c);
  LOWBIT_CHECK(invalid.empty(), invalid);
  wte = register_module("wte", nn::Embedding(c.vocab_size, c.n_embd));
  wpe = register_module("wpe", nn::Embedding(c.block_size, c.n_embd));
  drop = register_module("drop", nn::Dropout(c.dropout));
  h = register_module("h", nn::ModuleList());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(Block(c));
  ln_f = register_module("ln_f", nn::LayerNorm(nn::LayerNormOptions({c.n_embd})));

  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  for (const auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor p = item.value();
    if (name.find("ln_") != std::string::npos) continue;  // LayerNorm: ones and zeros
    if (p.dim() == 1) {
      p.zero_();
    } else {
      const bool residual = name.size() > 13 && name.compare(name.size() - 13, 13, "c_proj.weight") == 0;
      p.normal_(0.0, residual ? residual_std : 0.02);
    }
  }
}

at::Tensor GptImpl::forward(const at::Tensor& idx) {
  const int64_t T = idx.size(1);
  LOWBIT_CHECK(T <= config_.block_size, "gpt: sequence of ", T, " tokens is longer than block_size ",
              config_.block_size);
  const at::Tensor pos = torch::arange(T, idx.options().dtype(torch::kLong));
  at::Tensor x = drop(wte(idx) + wpe(pos));
  for (const auto& block : *h) x = block->as<Block>()->forward(x);
  return torch::matmul(ln_f(x), wte->weight.t());  // the head tied to the token embedding
}

at::Tensor GptImpl::Loss(const at::Tensor& idx, const at::Tensor& targets) {
  const at::Tensor logits = forward(idx);
  return torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}), targets.reshape({-1}));
}

at::Tensor Sample(Gpt& model, const at::Tensor& prompt, int64_t length, double temperature, uint64_t seed) {
  LOWBIT_CHECK(prompt.dim() == 1 && prompt.numel() >= 1, "gpt: Sample needs a non-empty 1-D prompt");
  LOWBIT_CHECK(temperature > 0, "gpt: temperature must be > 0, got ", temperature);
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor tokens = prompt.to(torch::kLong).clone();
  const int64_t block = model->config().block_size;
  for (int64_t i = 0; i < length; ++i) {
    const int64_t n = tokens.numel(), start = std::max<int64_t>(0, n - block);
    const at::Tensor context = tokens.narrow(0, start, n - start).unsqueeze(0);
    const at::Tensor logits = model->forward(context).select(1, n - start - 1).squeeze(0) / temperature;
    const at::Tensor next = torch::multinomial(torch::softmax(logits, -1), 1, /*replacement=*/false, gen);
    tokens = torch::cat({tokens, next});
  }
  model->train(was_training);
  return tokens.narrow(0, prompt.numel(), length);
}

}  // namespace lowbit::examples::gpt
