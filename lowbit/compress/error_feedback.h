// ErrorFeedback: what a compression hook remembers of what compression lost.
//
// Per parameter, a policy turns the gradient g into the tensor x to compress,
// updates its state from what this rank's message decoded to (`sent`), and
// turns the mean of all ranks' decoded messages into the gradient estimate:
//
// | policy   | x                | after encoding               | estimate          |
// |----------|------------------|------------------------------|-------------------|
// | none     | g                |                              | mean              |
// | ef       | g + e            | e = x - sent                 | mean              |
// | ef21     | g - h            | h += sent                    | G += mean; G      |
// | econtrol | eta e + g - h    | e += g - h - sent; h += sent | G += mean; G      |
//
// ef: Seide et al. 2014 / Karimireddy et al. 2019; ef21: Richtárik et al.
// 2021; econtrol: Gao et al. 2024. G (ef21, econtrol) is the same on every
// rank. Policies are pure: they read `state` and write `next`, so a hook can
// drop `next` when the step turns out to be non-finite.
//
//   auto ef = MakeErrorFeedback("ef");
//   at::Tensor x = ef->Input(g, state);
//   ef->AfterEncode(g, x, sent, state, next);
//   at::Tensor estimate = ef->Estimate(mean, state, next);
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include "lowbit/compress/defaults.h"

namespace lowbit::compress {

// One parameter's state, by name ("e", "h", "G"); missing tensors are zeros.
using FeedbackState = std::map<std::string, at::Tensor>;

class ErrorFeedback {
 public:
  virtual ~ErrorFeedback() = default;
  virtual std::string Name() const = 0;
  virtual std::string Config() const = 0;
  virtual at::Tensor Input(const at::Tensor& grad, const FeedbackState& state) const = 0;
  virtual void AfterEncode(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& sent,
                           const FeedbackState& state, FeedbackState& next) const = 0;
  virtual at::Tensor Estimate(const at::Tensor& mean, const FeedbackState& state, FeedbackState& next) const = 0;
};

// name: none, ef, ef21 or econtrol; `eta` is EControl's error weight in (0, 1].
// EControl diverges when eta is much larger than the fraction of information
// the compressor keeps (measured: top-k 10% converges at 0.1, diverges at 0.5).
std::shared_ptr<ErrorFeedback> MakeErrorFeedback(const std::string& name, double eta = defaults::kEfEta);

}  // namespace lowbit::compress
