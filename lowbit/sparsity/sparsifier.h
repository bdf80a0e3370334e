// Sparsifier: sparse training of a model's Linear and Conv2d layers (and
// QAT's QuantLinear/QuantConv2d, which hold the same weight tensors). Each
// attached layer's weight parameter holds the weights the forward uses,
// W * mask (SR-STE, hard) or W * (mask + (1 - mask) beta) (PGF); SR-STE and
// PGF keep the dense W here. Around each optimizer step the Sparsifier turns
// the gradient into the method's gradient for W, lets the optimizer update
// W, recomputes masks when due and writes the sparse weights back, so after
// every step the pruned weights are exactly zero (PGF: beta times W until
// beta reaches 0). Any torch::optim::Optimizer works, the 8-bit ones too.
//
// With DistributedDataParallel: the Sparsifier adds no parameters, so it may
// be built before or after DDP when every rank starts from the same weights
// (the same seed). When they do not, build it after DDP, which broadcasts
// rank 0's weights: a Sparsifier built before would keep this rank's own
// masks and dense weights, and its first step throws, naming the layer (see
// Note [Weights overwritten under the Sparsifier] in sparsifier.cpp).
//
// N:M groups run along the input dimension: a Linear's in_features; a
// Conv2d's input channels at each kernel position (the GEMM's reduction
// dimension, as sparse tensor cores want it).
//
//   lowbit::sparsity::SparseConfig c;                        // 2:4 SR-STE
//   lowbit::sparsity::Sparsifier sparsifier(*model, c, {{"conv1", std::nullopt}});
//   ... loss.backward();
//   sparsifier.Step(optimizer);                              // instead of optimizer.step()
//   checkpoint.Sparsifier(sparsifier);   // masks, dense weights, step (train/checkpoint.h)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lowbit/sparsity/sparse_config.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn
namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize

namespace lowbit::sparsity {

class Sparsifier {
 public:
  // Attaches to every Linear/Conv2d (QAT's too) of `module`, depth first in
  // registration order, with `config` or the first override whose fnmatch
  // pattern matches the dotted layer name (std::nullopt: leave it dense).
  // Computes the first masks from the current weights. Throws, naming the
  // layer, on an invalid config or an input dimension that is not a
  // multiple of m.
  Sparsifier(torch::nn::Module& module, SparseConfig config,
             std::vector<std::pair<std::string, std::optional<SparseConfig>>> overrides = {});

  // BeforeStep(); optimizer.step(); AfterStep().
  void Step(torch::optim::Optimizer& optimizer);
  // After backward, before the optimizer: the method's gradient for the dense
  // weights, and the dense weights into the parameters.
  void BeforeStep();
  // After the optimizer: count the step, recompute masks when due, write the
  // sparse weights into the parameters.
  void AfterStep();

  int64_t step() const { return step_; }
  std::vector<std::string> LayerNames() const;
  const SparseConfig& Config(const std::string& layer) const;
  // Bool, the weight's shape; true = kept.
  const at::Tensor& Mask(const std::string& layer) const;
  // The dense weights (SR-STE, PGF; kHard: the parameter itself).
  const at::Tensor& Dense(const std::string& layer) const;
  // The parameter the layer's forward uses.
  const at::Tensor& Weight(const std::string& layer) const;
  // Fraction of zeros in the masks, over all attached layers' weights.
  double MaskSparsity() const;
  // One line per attached layer, "name [shape] config", for start-up checks
  // that every rank sparsifies alike (lowbit::comm::CheckSameOnAllRanks).
  std::vector<std::string> Settings() const;

  // Step, masks and dense weights, with each layer's ToString(config), into
  // an archive (lowbit::train::Checkpoint writes it to disk with the rest of
  // the training state). Load checks names, shapes and configs, then
  // rewrites the parameters.
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

 private:
  struct Layer {
    std::string name;
    at::Tensor weight;  // the parameter (shared with the module)
    SparseConfig config;
    at::Tensor mask;
    at::Tensor dense;  // undefined for kHard
    // The weights masks are chosen from: dense, or (kHard) the parameter.
    at::Tensor Source() const { return dense.defined() ? dense : weight.detach(); }
  };
  at::Tensor ComputeMask(const Layer& l, const at::Tensor& w, int64_t t) const;
  bool MaskDue(const Layer& l, int64_t t) const;
  // New masks for the layers due at step t (all of them when `all`), the
  // global ones from one threshold over their weights together.
  void RecomputeMasks(int64_t t, bool all);
  // What the layer's parameter holds after WriteSparse.
  at::Tensor SparseWeights(const Layer& l) const;
  void WriteSparse(Layer& l);
  void CheckWeightsUnchanged() const;
  Layer& Find(const std::string& name);
  const Layer& Find(const std::string& name) const;

  std::vector<Layer> layers_;
  int64_t step_ = 0;
  // The first BeforeStep after construction or Load checked the weights.
  bool checked_ = false;
};

// The [rows, in] view N:M groups run along: a Linear weight as it is; a
// Conv2d weight [out, in, kh, kw] as [out * kh * kw, in] (a copy). And back.
at::Tensor InputMajor(const at::Tensor& weight);
at::Tensor FromInputMajor(const at::Tensor& rows, at::IntArrayRef weight_shape);

}  // namespace lowbit::sparsity
