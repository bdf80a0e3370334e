#include "lowbit/optimizers/stable_embedding.h"

#include <torch/nn/functional/embedding.h>
#include <torch/nn/init.h>

#include "lowbit/base/error.h"
#include "lowbit/optimizers/blockwise_8bit.h"

namespace lowbit::optim {

StableEmbeddingImpl::StableEmbeddingImpl(torch::nn::EmbeddingOptions options_) : options(std::move(options_)) {
  reset();
}

void StableEmbeddingImpl::reset() {
  LOWBIT_CHECK(options.num_embeddings() > 0, "StableEmbedding: num_embeddings must be > 0, got ",
               options.num_embeddings());
  LOWBIT_CHECK(options.embedding_dim() > 0, "StableEmbedding: embedding_dim must be > 0, got ",
               options.embedding_dim());
  if (options.padding_idx()) {
    int64_t& pad = *options.padding_idx();
    LOWBIT_CHECK(pad >= -options.num_embeddings() && pad < options.num_embeddings(),
                 "StableEmbedding: padding_idx must be within num_embeddings (", options.num_embeddings(), "), got ",
                 pad);
    if (pad < 0) pad += options.num_embeddings();
  }
  LOWBIT_CHECK(!options._weight().defined(), "StableEmbedding: a given _weight would skip the Xavier initialisation");
  weight = register_parameter("weight", at::empty({options.num_embeddings(), options.embedding_dim()}));
  {
    at::NoGradGuard no_grad;
    torch::nn::init::xavier_uniform_(weight);
    if (options.padding_idx()) weight[*options.padding_idx()].fill_(0);
  }
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.embedding_dim()})));
  KeepFp32State(weight);
}

at::Tensor StableEmbeddingImpl::forward(const at::Tensor& indices) {
  namespace F = torch::nn::functional;
  F::EmbeddingFuncOptions o;
  o.padding_idx(options.padding_idx()).max_norm(options.max_norm()).norm_type(options.norm_type())
      .scale_grad_by_freq(options.scale_grad_by_freq()).sparse(options.sparse());
  return norm(F::embedding(indices, weight, o));
}

}  // namespace lowbit::optim
