#include "lowbit/optimizers/blockwise_8bit.h"

#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "lowbit/base/error.h"
#include "lowbit/kernels/optim8bit.h"

namespace lowbit::optim {
namespace {

// Squared gradient norms kept for percentile clipping (bitsandbytes keeps 100).
constexpr int64_t kClipHistory = 100;
// Archive prefix and layout version of the saved state.
constexpr const char* kArchiveKey = "lowbit8bit_state";
// 2: one Dict[str, Tensor] under kArchiveKey (1 was a list of tensors and names).
constexpr int64_t kFormat = 2;

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct Fp32Marks {
  std::mutex mu;
  std::vector<WeakImpl> params;
};

Fp32Marks& Marks() {
  static Fp32Marks marks;
  return marks;
}

bool MarkedLocked(const Fp32Marks& marks, const at::Tensor& param) {
  for (const WeakImpl& w : marks.params) {
    if (!w.expired() && w._unsafe_get_target() == param.unsafeGetTensorImpl()) return true;
  }
  return false;
}

std::string Key(size_t i, const std::string& name) { return "p" + std::to_string(i) + "/" + name; }

}  // namespace

void KeepFp32State(const at::Tensor& param) {
  LOWBIT_CHECK(param.defined(), "KeepFp32State: param is undefined");
  Fp32Marks& marks = Marks();
  std::lock_guard<std::mutex> lock(marks.mu);
  marks.params.erase(std::remove_if(marks.params.begin(), marks.params.end(), [](const WeakImpl& w) { return w.expired(); }),
                     marks.params.end());
  if (!MarkedLocked(marks, param)) marks.params.emplace_back(param.getIntrusivePtr());
}

bool KeepsFp32State(const at::Tensor& param) {
  Fp32Marks& marks = Marks();
  std::lock_guard<std::mutex> lock(marks.mu);
  return MarkedLocked(marks, param);
}

namespace internal {

void CheckLr(const std::string& what, double lr) {
  LOWBIT_CHECK(lr > 0 && std::isfinite(lr), what, ": lr must be > 0, got ", lr);
}

void CheckBeta(const std::string& what, const char* name, double beta) {
  LOWBIT_CHECK(beta >= 0 && beta < 1, what, ": ", name, " must be in [0, 1), got ", beta);
}

void CheckPositive(const std::string& what, const char* name, double value) {
  LOWBIT_CHECK(value > 0 && std::isfinite(value), what, ": ", name, " must be > 0, got ", value);
}

void CheckNonNegative(const std::string& what, const char* name, double value) {
  LOWBIT_CHECK(value >= 0 && std::isfinite(value), what, ": ", name, " must be >= 0, got ", value);
}

void CheckSettings(const std::string& what, const Blockwise8bitSettings& s) {
  LOWBIT_CHECK(kernels::IsOptimBlock(s.block_size), what, ": block_size must be a power of two in [",
               kernels::kMinOptimBlock, ", ", kernels::kMaxOptimBlock, "], got ", s.block_size);
  LOWBIT_CHECK(s.min_8bit_size >= 0, what, ": min_8bit_size must be >= 0, got ", s.min_8bit_size);
  LOWBIT_CHECK(s.percentile_clipping >= 1 && s.percentile_clipping <= 100, what,
               ": percentile_clipping must be in [1, 100] (100: off), got ", s.percentile_clipping);
}

}  // namespace internal

struct Blockwise8bitOptimizer::ParamState {
  int64_t step = 0;
  int64_t block = 256;
  kernels::OptimState m;  // undefined where the rule keeps no such state
  kernels::OptimState v;
  at::Tensor gnorms;  // squared gradient norms, ring of kClipHistory; undefined without clipping

  bool quantized() const { return m.quantized() || v.quantized(); }
  kernels::OptimState* M() { return m.defined() ? &m : nullptr; }
  kernels::OptimState* V() { return v.defined() ? &v : nullptr; }
  int64_t Bytes() const {
    int64_t bytes = 0;
    for (const at::Tensor* t : {&m.values, &m.codes, &m.absmax, &v.values, &v.codes, &v.absmax, &gnorms}) {
      if (t->defined()) bytes += t->numel() * static_cast<int64_t>(t->element_size());
    }
    return bytes;
  }
};

Blockwise8bitOptimizer::Blockwise8bitOptimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                               std::unique_ptr<torch::optim::OptimizerOptions> defaults)
    : torch::optim::Optimizer(std::move(groups), std::move(defaults)) {}

Blockwise8bitOptimizer::~Blockwise8bitOptimizer() = default;

void Blockwise8bitOptimizer::CheckGroups() const {
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    Check(param_groups_[g].options(), g);
    for (const at::Tensor& p : param_groups_[g].params()) {
      LOWBIT_CHECK(p.scalar_type() == at::kFloat, Name(), ": parameters must be float32, got ", p.scalar_type(),
                   " for a parameter of shape ", p.sizes(), " in group ", g);
    }
  }
}

Blockwise8bitOptimizer::ParamState& Blockwise8bitOptimizer::CreateState(const at::Tensor& param, const StepPlan& plan,
                                                                        const Blockwise8bitSettings& settings) {
  auto state = std::make_unique<ParamState>();
  const int64_t n = param.numel();
  const bool quantized = n >= settings.min_8bit_size && !KeepsFp32State(param);
  state->block = settings.block_size;
  const at::TensorOptions on = at::TensorOptions().device(param.device());
  auto make = [&](bool is_signed, double initial) {
    kernels::OptimState s;
    if (!quantized) {
      s.values = at::full({n}, initial, on.dtype(at::kFloat));
      return s;
    }
    s.codes = at::zeros({n}, on.dtype(at::kByte));
    s.absmax = at::zeros({kernels::NumOptimBlocks(n, state->block)}, on.dtype(at::kFloat));
    if (initial != 0) kernels::QuantizeDynamic(at::full({n}, initial, on.dtype(at::kFloat)), is_signed, state->block, s.absmax, s.codes);
    return s;
  };
  if (plan.has_m) state->m = make(true, 0.0);
  if (plan.has_v) state->v = make(false, plan.v_initial);
  std::unique_ptr<ParamState>& slot = state_[param.unsafeGetTensorImpl()];
  slot = std::move(state);
  return *slot;
}

double Blockwise8bitOptimizer::ClipScale(ParamState& state, const at::Tensor& grad,
                                         const Blockwise8bitSettings& settings) const {
  if (settings.percentile_clipping >= 100) return 1.0;
  if (!state.gnorms.defined()) state.gnorms = at::zeros({kClipHistory}, grad.options().dtype(at::kFloat));
  const at::Tensor squared = at::nan_to_num(grad, 0.0, 0.0, 0.0).square().sum();
  state.gnorms.narrow(0, (state.step - 1) % kClipHistory, 1).copy_(squared.reshape({1}));
  const int64_t count = std::min(state.step, kClipHistory);
  const at::Tensor sorted = std::get<0>(state.gnorms.narrow(0, 0, count).sort());
  const int64_t at = std::min(count - 1, settings.percentile_clipping * count / 100);
  const double clip = std::sqrt(sorted[at].item<double>());
  const double current = std::sqrt(squared.item<double>());
  return current > clip ? clip / current : 1.0;
}

at::Tensor Blockwise8bitOptimizer::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const torch::optim::OptimizerOptions& options = param_groups_[g].options();
    Check(options, g);
    const Blockwise8bitSettings& settings = Settings(options);
    for (at::Tensor& p : param_groups_[g].params()) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      LOWBIT_CHECK(!grad.is_sparse(), Name(), ": sparse gradients are not supported (parameter of shape ", p.sizes(),
                   " in group ", g, ")");
      LOWBIT_CHECK(p.scalar_type() == at::kFloat && p.is_contiguous(), Name(),
                   ": parameters must be contiguous float32, got ", p.scalar_type(), " of shape ", p.sizes(),
                   " in group ", g);
      auto it = state_.find(p.unsafeGetTensorImpl());
      const StepPlan plan = Plan(options, (it == state_.end() ? 0 : it->second->step) + 1);
      ParamState& state = it == state_.end() ? CreateState(p, plan, settings) : *it->second;
      LOWBIT_CHECK(plan.has_m == state.m.defined() && plan.has_v == state.v.defined(), Name(), ": group ", g,
                   "'s settings now need ", plan.has_m ? "a" : "no", " momentum state and ", plan.has_v ? "a" : "no",
                   " second-moment state, but the parameter of shape ", p.sizes(), " was created with ",
                   state.m.defined() ? "a" : "no", " and ", state.v.defined() ? "a" : "no",
                   " (momentum changed between 0 and non-zero after the first step?)");
      ++state.step;
      kernels::OptimStepArgs args = plan.args;
      args.grad_scale = static_cast<float>(ClipScale(state, grad, settings));
      at::Tensor data = p;
      kernels::FusedOptimizerStep(args, data, grad.contiguous(), state.M(), state.V(), state.block);
      p.unsafeGetTensorImpl()->bump_version();
    }
  }
  return loss;
}

// Archive layout: one Dict[str, Tensor] under "lowbit8bit_state": "format", "groups", "parameters", "group<g>/lr" and, for
// parameter i (in group order) that has state, "p<i>/step", "p<i>/block",
// "p<i>/{m,v}/{values|codes,absmax}" and "p<i>/gnorms".
void Blockwise8bitOptimizer::save(torch::serialize::OutputArchive& archive) const {
  std::vector<std::pair<std::string, at::Tensor>> out{
      {"format", at::tensor(kFormat)}, {"groups", at::tensor(static_cast<int64_t>(param_groups_.size()))}};
  size_t i = 0;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    out.emplace_back("group" + std::to_string(g) + "/lr", at::tensor(param_groups_[g].options().get_lr(), at::kDouble));
    for (const at::Tensor& p : param_groups_[g].params()) {
      auto it = state_.find(p.unsafeGetTensorImpl());
      if (it != state_.end()) {
        const ParamState& s = *it->second;
        out.emplace_back(Key(i, "step"), at::tensor(s.step));
        out.emplace_back(Key(i, "block"), at::tensor(s.block));
        for (const auto& [name, st] : {std::make_pair("m", &s.m), std::make_pair("v", &s.v)}) {
          if (!st->defined()) continue;
          if (st->quantized()) {
            out.emplace_back(Key(i, std::string(name) + "/codes"), st->codes);
            out.emplace_back(Key(i, std::string(name) + "/absmax"), st->absmax);
          } else {
            out.emplace_back(Key(i, std::string(name) + "/values"), st->values);
          }
        }
        if (s.gnorms.defined()) out.emplace_back(Key(i, "gnorms"), s.gnorms);
      }
      ++i;
    }
  }
  out.emplace_back("parameters", at::tensor(static_cast<int64_t>(i)));
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, tensor] : out) dict.insert(name, tensor);
  archive.write(kArchiveKey, c10::IValue(dict));
}

void Blockwise8bitOptimizer::load(torch::serialize::InputArchive& archive) {
  std::map<std::string, at::Tensor> saved;
  c10::IValue dict;
  LOWBIT_CHECK(archive.try_read(kArchiveKey, dict) && dict.isGenericDict(), Name(),
               ": the archive holds no 8-bit optimizer state (format ", kFormat, ")");
  for (const auto& item : dict.toGenericDict()) {
    LOWBIT_CHECK(item.key().isString() && item.value().isTensor(), Name(), ": malformed 8-bit optimizer state");
    saved[item.key().toStringRef()] = item.value().toTensor();
  }
  LOWBIT_CHECK(saved.count("format") && saved.count("groups") && saved.count("parameters"), Name(),
               ": the archive holds no 8-bit optimizer state");
  LOWBIT_CHECK(saved["format"].item<int64_t>() == kFormat, Name(), ": archive format ", saved["format"].item<int64_t>(),
               ", this build reads ", kFormat);
  const int64_t groups = saved["groups"].item<int64_t>();
  LOWBIT_CHECK(groups == static_cast<int64_t>(param_groups_.size()), Name(), ": the archive has ", groups,
               " parameter groups, this optimizer has ", param_groups_.size());
  int64_t total = 0;
  for (const auto& group : param_groups_) total += static_cast<int64_t>(group.params().size());
  LOWBIT_CHECK(saved["parameters"].item<int64_t>() == total, Name(), ": the archive has state for ",
               saved["parameters"].item<int64_t>(), " parameters, this optimizer has ", total);

  std::unordered_map<const c10::TensorImpl*, std::unique_ptr<ParamState>> loaded;
  size_t i = 0;
  for (const auto& group : param_groups_) {
    for (const at::Tensor& p : group.params()) {
      const size_t index = i++;
      if (!saved.count(Key(index, "step"))) continue;
      auto s = std::make_unique<ParamState>();
      s->step = saved[Key(index, "step")].item<int64_t>();
      s->block = saved[Key(index, "block")].item<int64_t>();
      const int64_t n = p.numel();
      const at::TensorOptions on = at::TensorOptions().device(p.device());
      auto read = [&](const std::string& name, int64_t numel, at::ScalarType dtype) {
        auto it = saved.find(Key(index, name));
        LOWBIT_CHECK(it != saved.end(), Name(), ": archive entry '", Key(index, name), "' is missing");
        LOWBIT_CHECK(it->second.numel() == numel && it->second.scalar_type() == dtype, Name(), ": archive entry '",
                     Key(index, name), "' is ", it->second.scalar_type(), " with ", it->second.numel(),
                     " elements; parameter ", index, " (shape ", p.sizes(), ") needs ", dtype, " with ", numel);
        return it->second.to(on.dtype(dtype)).clone();
      };
      for (auto [name, st] : {std::make_pair("m", &s->m), std::make_pair("v", &s->v)}) {
        const std::string prefix = name;
        if (saved.count(Key(index, prefix + "/codes"))) {
          st->codes = read(prefix + "/codes", n, at::kByte);
          st->absmax = read(prefix + "/absmax", kernels::NumOptimBlocks(n, s->block), at::kFloat);
        } else if (saved.count(Key(index, prefix + "/values"))) {
          st->values = read(prefix + "/values", n, at::kFloat);
        }
      }
      if (saved.count(Key(index, "gnorms"))) s->gnorms = read("gnorms", kClipHistory, at::kFloat);
      loaded[p.unsafeGetTensorImpl()] = std::move(s);
    }
  }
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const std::string key = "group" + std::to_string(g) + "/lr";
    LOWBIT_CHECK(saved.count(key), Name(), ": archive entry '", key, "' is missing");
    param_groups_[g].options().set_lr(saved[key].item<double>());
  }
  state_ = std::move(loaded);
}

int64_t Blockwise8bitOptimizer::StateBytes() const {
  int64_t bytes = 0;
  for (const auto& [impl, s] : state_) bytes += s->Bytes();
  return bytes;
}

int64_t Blockwise8bitOptimizer::StateElements() const {
  int64_t n = 0;
  for (const auto& group : param_groups_) {
    for (const at::Tensor& p : group.params()) n += state_.count(p.unsafeGetTensorImpl()) ? p.numel() : 0;
  }
  return n;
}

bool Blockwise8bitOptimizer::Is8bit(const at::Tensor& param) const {
  auto it = state_.find(param.unsafeGetTensorImpl());
  return it != state_.end() && it->second->quantized();
}

at::Tensor Blockwise8bitOptimizer::DequantizedState(const at::Tensor& param, const std::string& name) const {
  auto it = state_.find(param.unsafeGetTensorImpl());
  LOWBIT_CHECK(it != state_.end(), Name(), ": the parameter of shape ", param.sizes(), " has no state yet");
  const ParamState& s = *it->second;
  LOWBIT_CHECK((name == "m" && s.m.defined()) || (name == "v" && s.v.defined()), Name(), ": no state '", name,
               "' for the parameter of shape ", param.sizes());
  const kernels::OptimState& st = name == "m" ? s.m : s.v;
  if (!st.quantized()) return st.values.view(param.sizes()).clone();
  at::Tensor out = at::empty({param.numel()}, st.absmax.options());
  kernels::DequantizeDynamic(st.codes, st.absmax, name == "m", s.block, out);
  return out.view(param.sizes());
}

}  // namespace lowbit::optim
