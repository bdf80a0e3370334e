// The 8-bit blockwise optimizers: Adam8bit, AdamW8bit, SGD8bit (momentum),
// Lion8bit, RMSprop8bit and Adagrad8bit. Each takes the hyper-parameters of
// its torch::optim counterpart (Lion: Chen et al. 2023, which LibTorch lacks)
// plus the 8-bit settings of Blockwise8bitSettings, per parameter group, and
// computes what the counterpart computes, with 8-bit state (see
// optimizers/blockwise_8bit.h, and kernels/optim8bit.h for the formulas).
//
//   lowbit::optim::Adam8bit opt(model->parameters(), lowbit::optim::Adam8bitOptions(1e-3));
//   lowbit::optim::SGD8bit sgd(model->parameters(), lowbit::optim::SGD8bitOptions(0.05).momentum(0.9));
//   lowbit::optim::Lion8bit lion(model->parameters(),
//                                lowbit::optim::Lion8bitOptions(1e-4).percentile_clipping(95));
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

#include <torch/arg.h>

#include "lowbit/optimizers/blockwise_8bit.h"

namespace lowbit::optim {

struct Adam8bitOptions : public Blockwise8bitOptions<Adam8bitOptions> {
  Adam8bitOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT: implicit, as torch::optim::AdamOptions
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0;  // L2, added to the gradient
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "Adam8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

struct AdamW8bitOptions : public Blockwise8bitOptions<AdamW8bitOptions> {
  AdamW8bitOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 1e-2;  // decoupled: p *= 1 - lr wd
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "AdamW8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

struct SGD8bitOptions : public Blockwise8bitOptions<SGD8bitOptions> {
  SGD8bitOptions(double lr) : lr_(lr) {}  // NOLINT
  TORCH_ARG(double, lr);
  TORCH_ARG(double, momentum) = 0;  // 0: no state
  TORCH_ARG(double, dampening) = 0;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, nesterov) = false;
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "SGD8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

struct Lion8bitOptions : public Blockwise8bitOptions<Lion8bitOptions> {
  Lion8bitOptions(double lr = 1e-4) : lr_(lr) {}  // NOLINT
  TORCH_ARG(double, lr) = 1e-4;
  TORCH_ARG(Betas, betas) = std::make_tuple(0.9, 0.99);
  TORCH_ARG(double, weight_decay) = 0;  // decoupled
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "Lion8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

// Not centered (torch's centered=true would need a third state).
struct RMSprop8bitOptions : public Blockwise8bitOptions<RMSprop8bitOptions> {
  RMSprop8bitOptions(double lr = 1e-2) : lr_(lr) {}  // NOLINT
  TORCH_ARG(double, lr) = 1e-2;
  TORCH_ARG(double, alpha) = 0.99;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(double, momentum) = 0;  // > 0 adds an 8-bit momentum buffer
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "RMSprop8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

struct Adagrad8bitOptions : public Blockwise8bitOptions<Adagrad8bitOptions> {
  Adagrad8bitOptions(double lr = 1e-2) : lr_(lr) {}  // NOLINT
  TORCH_ARG(double, lr) = 1e-2;
  TORCH_ARG(double, lr_decay) = 0;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(double, initial_accumulator_value) = 0;
  TORCH_ARG(double, eps) = 1e-10;
 public:
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
  static std::string Name() { return "Adagrad8bit"; }
  void Check(size_t group) const;
  StepPlan Plan(int64_t t) const;
};

using Adam8bit = Optimizer8bit<Adam8bitOptions>;
using AdamW8bit = Optimizer8bit<AdamW8bitOptions>;
using SGD8bit = Optimizer8bit<SGD8bitOptions>;
using Lion8bit = Optimizer8bit<Lion8bitOptions>;
using RMSprop8bit = Optimizer8bit<RMSprop8bitOptions>;
using Adagrad8bit = Optimizer8bit<Adagrad8bitOptions>;

extern template class Optimizer8bit<Adam8bitOptions>;
extern template class Optimizer8bit<AdamW8bitOptions>;
extern template class Optimizer8bit<SGD8bitOptions>;
extern template class Optimizer8bit<Lion8bitOptions>;
extern template class Optimizer8bit<RMSprop8bitOptions>;
extern template class Optimizer8bit<Adagrad8bitOptions>;

}  // namespace lowbit::optim
