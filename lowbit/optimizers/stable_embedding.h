// StableEmbedding: the embedding layer bitsandbytes pairs with 8-bit
// optimizers (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization", Sec. 2.3): Xavier-uniform initialisation instead of N(0, 1),
// layer norm on the looked-up vectors, and fp32 optimizer state for the
// weight (KeepFp32State), since rare tokens' statistics are what 8 bits serve
// worst. The weight is "weight", the norm "norm", as in bitsandbytes.
//
//   lowbit::optim::StableEmbedding emb(torch::nn::EmbeddingOptions(50000, 512).padding_idx(0));
//   at::Tensor x = emb(token_ids);  // [..., 512], layer-normed
//   lowbit::optim::Adam8bit opt(model->parameters());  // emb's weight keeps fp32 state
#pragma once

#include <cstdint>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/options/embedding.h>
#include <torch/nn/pimpl.h>

namespace lowbit::optim {

class StableEmbeddingImpl : public torch::nn::Cloneable<StableEmbeddingImpl> {
 public:
  StableEmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : StableEmbeddingImpl(torch::nn::EmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit StableEmbeddingImpl(torch::nn::EmbeddingOptions options);

  void reset() override;
  at::Tensor forward(const at::Tensor& indices);

  torch::nn::EmbeddingOptions options;
  at::Tensor weight;
  torch::nn::LayerNorm norm{nullptr};
};

TORCH_MODULE(StableEmbedding);

}  // namespace lowbit::optim
