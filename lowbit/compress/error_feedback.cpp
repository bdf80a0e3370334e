#include "lowbit/compress/error_feedback.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include "lowbit/base/error.h"

namespace lowbit::compress {
namespace {

// The state tensor `name`, or undefined when it does not exist yet (zero).
at::Tensor Get(const FeedbackState& state, const char* name) {
  auto it = state.find(name);
  return it == state.end() ? at::Tensor() : it->second;
}

at::Tensor PlusOrSelf(const at::Tensor& a, const at::Tensor& b) { return b.defined() ? a + b : a.clone(); }
at::Tensor MinusOrSelf(const at::Tensor& a, const at::Tensor& b) { return b.defined() ? a - b : a.clone(); }

class NoFeedback final : public ErrorFeedback {
 public:
  std::string Name() const override { return "none"; }
  std::string Config() const override { return "none"; }
  at::Tensor Input(const at::Tensor& grad, const FeedbackState&) const override { return grad; }
  void AfterEncode(const at::Tensor&, const at::Tensor&, const at::Tensor&, const FeedbackState&,
                   FeedbackState&) const override {}
  at::Tensor Estimate(const at::Tensor& mean, const FeedbackState&, FeedbackState&) const override { return mean; }
};

class ClassicFeedback final : public ErrorFeedback {
 public:
  std::string Name() const override { return "ef"; }
  std::string Config() const override { return "ef"; }
  at::Tensor Input(const at::Tensor& grad, const FeedbackState& state) const override {
    return PlusOrSelf(grad, Get(state, "e"));
  }
  void AfterEncode(const at::Tensor&, const at::Tensor& input, const at::Tensor& sent, const FeedbackState&,
                   FeedbackState& next) const override {
    next["e"] = input - sent;
  }
  at::Tensor Estimate(const at::Tensor& mean, const FeedbackState&, FeedbackState&) const override { return mean; }
};

// EF21 and EControl share the global estimate G, advanced by the mean.
at::Tensor AdvanceGlobal(const at::Tensor& mean, const FeedbackState& state, FeedbackState& next) {
  at::Tensor g = PlusOrSelf(mean, Get(state, "G"));
  next["G"] = g;
  return g.clone();
}

class Ef21Feedback final : public ErrorFeedback {
 public:
  std::string Name() const override { return "ef21"; }
  std::string Config() const override { return "ef21"; }
  at::Tensor Input(const at::Tensor& grad, const FeedbackState& state) const override {
    return MinusOrSelf(grad, Get(state, "h"));
  }
  void AfterEncode(const at::Tensor&, const at::Tensor&, const at::Tensor& sent, const FeedbackState& state,
                   FeedbackState& next) const override {
    next["h"] = PlusOrSelf(sent, Get(state, "h"));
  }
  at::Tensor Estimate(const at::Tensor& mean, const FeedbackState& state, FeedbackState& next) const override {
    return AdvanceGlobal(mean, state, next);
  }
};

class EControlFeedback final : public ErrorFeedback {
 public:
  explicit EControlFeedback(double eta) : eta_(eta) {
    LOWBIT_CHECK(eta > 0.0 && eta <= 1.0, "econtrol eta must be in (0, 1], got ", eta);
  }
  std::string Name() const override { return "econtrol"; }
  std::string Config() const override { return absl::StrCat("econtrol(eta=", eta_, ")"); }
  at::Tensor Input(const at::Tensor& grad, const FeedbackState& state) const override {
    at::Tensor x = MinusOrSelf(grad, Get(state, "h"));
    const at::Tensor e = Get(state, "e");
    if (e.defined()) x.add_(e, eta_);
    return x;
  }
  void AfterEncode(const at::Tensor& grad, const at::Tensor&, const at::Tensor& sent, const FeedbackState& state,
                   FeedbackState& next) const override {
    const at::Tensor h = Get(state, "h");
    at::Tensor e = MinusOrSelf(grad, h) - sent;
    const at::Tensor old_e = Get(state, "e");
    if (old_e.defined()) e.add_(old_e);
    next["e"] = e;
    next["h"] = PlusOrSelf(sent, h);
  }
  at::Tensor Estimate(const at::Tensor& mean, const FeedbackState& state, FeedbackState& next) const override {
    return AdvanceGlobal(mean, state, next);
  }

 private:
  double eta_;
};

}  // namespace

std::shared_ptr<ErrorFeedback> MakeErrorFeedback(const std::string& name, double eta) {
  if (name == "none") return std::make_shared<NoFeedback>();
  if (name == "ef") return std::make_shared<ClassicFeedback>();
  if (name == "ef21") return std::make_shared<Ef21Feedback>();
  if (name == "econtrol") return std::make_shared<EControlFeedback>(eta);
  LOWBIT_CHECK(false, "error feedback must be none, ef, ef21 or econtrol, got '", name, "'");
}

}  // namespace lowbit::compress
