// Blockwise8bitOptimizer: what the 8-bit optimizers share (Dettmers et al.
// 2022, "8-bit Optimizers via Block-wise Quantization"; bitsandbytes). Each
// state tensor (Adam's m and v, SGD's momentum, ...) of a parameter with at
// least min_8bit_size elements is kept as one uint8 code per value into a
// dynamic map plus one fp32 absmax per block_size values: 8 bytes of Adam
// state per parameter become about 2.03. Smaller tensors (biases, norms), and
// parameters marked with KeepFp32State (StableEmbedding's weight), keep fp32
// state. Each step is one fused kernel per parameter (kernels/optim8bit.h):
// dequantize, update, requantize, with the update computed from the states
// before requantization.
//
//   lowbit::optim::AdamW8bit opt(model->parameters(), lowbit::optim::AdamW8bitOptions(1e-3).weight_decay(1e-2));
//   for (...) { opt.zero_grad(); loss.backward(); opt.step(); }
//   torch::save(opt, "opt.pt");  // codes, absmax and steps; torch::load restores them exactly
//
// NaN and Inf gradient elements count as 0 for that step (the states decay
// as if the element had no gradient); the parameter's other elements step
// normally. Percentile clipping (percentile_clipping < 100, bitsandbytes'):
// each parameter keeps its last 100 squared gradient norms, and a gradient
// whose norm exceeds the given percentile of them is scaled down to it.
// Parameters must be float32; gradients must be dense.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include "lowbit/kernels/optim_types.h"

namespace lowbit::optim {

// (beta1, beta2), as torch::optim::AdamOptions::betas.
using Betas = std::tuple<double, double>;

// Every 8-bit optimizer keeps fp32 state for `param` (bitsandbytes'
// GlobalOptimManager override with optim_bits=32): for parameters whose
// statistics 8 bits serve badly, such as embeddings of rare tokens. Takes
// effect when an optimizer first creates the parameter's state.
void KeepFp32State(const at::Tensor& param);
bool KeepsFp32State(const at::Tensor& param);

// The settings every 8-bit optimizer's options carry (per parameter group).
struct Blockwise8bitSettings {
  int64_t block_size = 256;      // values per absmax: a power of two in [32, 4096]
  int64_t min_8bit_size = 4096;  // smaller parameters keep fp32 state
  int64_t percentile_clipping = 100;  // in (0, 100]; 100: off
};

// CRTP mixin giving an options type the settings above with chainable setters.
template <typename Derived>
class Blockwise8bitOptions : public torch::optim::OptimizerCloneableOptions<Derived>, public Blockwise8bitSettings {
 public:
  Derived& block_size(int64_t v) { return Set(&Blockwise8bitSettings::block_size, v); }
  Derived& min_8bit_size(int64_t v) { return Set(&Blockwise8bitSettings::min_8bit_size, v); }
  Derived& percentile_clipping(int64_t v) { return Set(&Blockwise8bitSettings::percentile_clipping, v); }
  const Blockwise8bitSettings& settings() const { return *this; }

 private:
  Derived& Set(int64_t Blockwise8bitSettings::*field, int64_t v) {
    this->*field = v;
    return static_cast<Derived&>(*this);
  }
};

// What one step of one parameter does: the kernel's scalars and which states
// the rule keeps.
struct StepPlan {
  kernels::OptimStepArgs args;
  bool has_m = false;   // signed state
  bool has_v = false;   // non-negative state
  double v_initial = 0; // the value v starts at (Adagrad's initial_accumulator_value)
};

// How an 8-bit optimizer's options type plugs in: `Name()`, `Check(group)`
// (LOWBIT_CHECKs naming the optimizer, group, parameter and value), and
// `Plan(t)` for the parameter's step t (1-based).
class Blockwise8bitOptimizer : public torch::optim::Optimizer {
 public:
  ~Blockwise8bitOptimizer() override;

  at::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  // Bytes of optimizer state held (codes, absmax, fp32 states, clipping
  // history), and how many parameter elements have state.
  int64_t StateBytes() const;
  int64_t StateElements() const;
  // Whether `param`'s state is 8-bit (false before its first step).
  bool Is8bit(const at::Tensor& param) const;
  // The dequantized state `name` ("m" or "v") of `param`, for inspection.
  at::Tensor DequantizedState(const at::Tensor& param, const std::string& name) const;

 protected:
  Blockwise8bitOptimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                         std::unique_ptr<torch::optim::OptimizerOptions> defaults);
  // Checks every group; called last by the constructor of Optimizer8bit.
  void CheckGroups() const;

  virtual std::string Name() const = 0;
  virtual const Blockwise8bitSettings& Settings(const torch::optim::OptimizerOptions& group) const = 0;
  virtual void Check(const torch::optim::OptimizerOptions& group, size_t index) const = 0;
  virtual StepPlan Plan(const torch::optim::OptimizerOptions& group, int64_t t) const = 0;

 private:
  struct ParamState;
  // The parameter's state for its first step, laid out as `plan` needs.
  ParamState& CreateState(const at::Tensor& param, const StepPlan& plan, const Blockwise8bitSettings& settings);
  double ClipScale(ParamState& state, const at::Tensor& grad, const Blockwise8bitSettings& settings) const;

  std::unordered_map<const c10::TensorImpl*, std::unique_ptr<ParamState>> state_;
};

// An 8-bit optimizer from its options type (optimizers/optim_8bit.h has the
// five). Options provides Name(), Check(group) and Plan(t).
template <typename Options>
class Optimizer8bit final : public Blockwise8bitOptimizer {
 public:
  explicit Optimizer8bit(std::vector<torch::optim::OptimizerParamGroup> groups, Options defaults = {})
      : Blockwise8bitOptimizer(std::move(groups), std::make_unique<Options>(defaults)) {
    CheckGroups();
  }
  explicit Optimizer8bit(std::vector<at::Tensor> params, Options defaults = {})
      : Optimizer8bit(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
                      std::move(defaults)) {}

 protected:
  std::string Name() const override { return Options::Name(); }
  const Blockwise8bitSettings& Settings(const torch::optim::OptimizerOptions& group) const override {
    return static_cast<const Options&>(group).settings();
  }
  void Check(const torch::optim::OptimizerOptions& group, size_t index) const override {
    static_cast<const Options&>(group).Check(index);
  }
  StepPlan Plan(const torch::optim::OptimizerOptions& group, int64_t t) const override {
    return static_cast<const Options&>(group).Plan(t);
  }
};

// LOWBIT_CHECKs the options types share; `what` names optimizer and group
// ("Adam8bit group 0").
namespace internal {
void CheckLr(const std::string& what, double lr);
void CheckBeta(const std::string& what, const char* name, double beta);
void CheckPositive(const std::string& what, const char* name, double value);
void CheckNonNegative(const std::string& what, const char* name, double value);
void CheckSettings(const std::string& what, const Blockwise8bitSettings& settings);
}  // namespace internal

}  // namespace lowbit::optim
