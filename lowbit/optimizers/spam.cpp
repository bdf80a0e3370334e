#include "lowbit/optimizers/spam.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/comm/comm_hook.h"
#include "lowbit/kernels/optim8bit.h"

namespace lowbit::optim {

namespace {

constexpr char kPrefix[] = "spam_";
constexpr double kPi = 3.14159265358979323846;

}  // namespace

SpamOptions SpamOptions::StableSpam(double lr) {
  SpamOptions o(lr);
  o.stable(true).reset_interval(1000).warmup_steps(0).spike_threshold(0);
  return o;
}

struct Spam::ParamState {
  int64_t step = 0;  // Adam's bias-correction count
  int64_t block = 256;
  kernels::OptimState m, v;
  // Stable-SPAM: moving max of |g|, moments of ||g|| (0-d fp32), their step.
  at::Tensor max_abs, norm_m, norm_v;
  int64_t stat_step = 0;

  std::vector<std::pair<std::string, at::Tensor*>> Tensors() {
    return {{"m/values", &m.values}, {"m/codes", &m.codes}, {"m/absmax", &m.absmax},
            {"v/values", &v.values}, {"v/codes", &v.codes}, {"v/absmax", &v.absmax},
            {"max_abs", &max_abs},   {"norm_m", &norm_m},   {"norm_v", &norm_v}};
  }
};

Spam::Spam(std::vector<torch::optim::OptimizerParamGroup> groups, SpamOptions defaults)
    : torch::optim::Optimizer(std::move(groups), std::make_unique<SpamOptions>(defaults)) {
  const SpamOptions& d = defaults;
  const std::string what = "Spam";
  internal::CheckBeta(what, "betas[0]", std::get<0>(d.betas()));
  internal::CheckBeta(what, "betas[1]", std::get<1>(d.betas()));
  internal::CheckPositive(what, "eps", d.eps());
  LOWBIT_CHECK(d.reset_interval() >= 0, what, ": reset_interval must be >= 0 (0: never), got ", d.reset_interval());
  LOWBIT_CHECK(d.warmup_steps() >= 0, what, ": warmup_steps must be >= 0, got ", d.warmup_steps());
  LOWBIT_CHECK(d.reset_interval() == 0 || d.warmup_steps() < d.reset_interval(), what, ": warmup_steps (",
               d.warmup_steps(), ") must be below reset_interval (", d.reset_interval(), ")");
  internal::CheckNonNegative(what, "spike_threshold", d.spike_threshold());
  LOWBIT_CHECK(d.clip_delay() >= 0, what, ": clip_delay must be >= 0, got ", d.clip_delay());
  internal::CheckBeta(what, "gamma1", d.gamma1());
  internal::CheckBeta(what, "gamma2", d.gamma2());
  internal::CheckBeta(what, "gamma3", d.gamma3());
  LOWBIT_CHECK(d.state_bits() == 32 || d.state_bits() == 8, what, ": state_bits must be 32 or 8, got ", d.state_bits());
  LOWBIT_CHECK(kernels::IsOptimBlock(d.block_size()), what, ": block_size must be a power of two in [",
               kernels::kMinOptimBlock, ", ", kernels::kMaxOptimBlock, "], got ", d.block_size());
  LOWBIT_CHECK(d.min_8bit_size() >= 0, what, ": min_8bit_size must be >= 0, got ", d.min_8bit_size());
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& o = static_cast<const SpamOptions&>(param_groups_[g].options());
    internal::CheckLr(absl::StrCat(what, " group ", g), o.lr());
    internal::CheckNonNegative(absl::StrCat(what, " group ", g), "weight_decay", o.weight_decay());
    for (const at::Tensor& p : param_groups_[g].params()) {
      LOWBIT_CHECK(p.scalar_type() == at::kFloat, what, ": parameters must be float32, got ", p.scalar_type(),
                   " for a parameter of shape ", p.sizes(), " in group ", g);
    }
  }
}

Spam::Spam(std::vector<at::Tensor> params, SpamOptions defaults)
    : Spam(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
           defaults) {}

Spam::~Spam() = default;

double Spam::WarmupScale(const SpamOptions& o, int64_t t) {
  if (o.reset_interval() == 0 || o.warmup_steps() == 0 || t < o.reset_interval()) return 1.0;
  const int64_t c = t % o.reset_interval();
  if (c >= o.warmup_steps()) return 1.0;
  return 1.0 - 0.99 * (1.0 + std::cos(kPi * static_cast<double>(c) / static_cast<double>(o.warmup_steps() + 1))) / 2.0;
}

Spam::ParamState& Spam::StateOf(const at::Tensor& p) {
  std::unique_ptr<ParamState>& slot = state_[p.unsafeGetTensorImpl()];
  if (!slot) slot = NewState(p);
  return *slot;
}

std::unique_ptr<Spam::ParamState> Spam::NewState(const at::Tensor& p) const {
  const auto& d = static_cast<const SpamOptions&>(defaults());
  auto state = std::make_unique<ParamState>();
  ParamState& s = *state;
  const int64_t n = p.numel();
  s.block = d.block_size();
  const at::TensorOptions f = p.options().dtype(at::kFloat);
  const bool quantized = d.state_bits() == 8 && n >= d.min_8bit_size() && !KeepsFp32State(p);
  for (kernels::OptimState* st : {&s.m, &s.v}) {
    if (quantized) {
      st->codes = at::zeros({n}, f.dtype(at::kByte));
      st->absmax = at::zeros({kernels::NumOptimBlocks(n, s.block)}, f);
    } else {
      st->values = at::zeros({n}, f);
    }
  }
  if (d.stable()) {
    s.max_abs = at::zeros({}, f);
    s.norm_m = at::zeros({}, f);
    s.norm_v = at::zeros({}, f);
  }
  return state;
}

namespace {

at::Tensor Fp32(const kernels::OptimState& st, bool is_signed, int64_t block) {
  if (!st.quantized()) return st.values;
  at::Tensor out = at::empty({st.codes.numel()}, st.absmax.options());
  kernels::DequantizeDynamic(st.codes, st.absmax, is_signed, block, out);
  return out;
}

}  // namespace

// Note [Spikes where v is 0]
// An element whose second moment is 0 has no history to call its gradient a
// spike against (the run's first step; and, with 8-bit state, a v too small
// for its block that rounded to 0). Clipping it would zero its gradient while
// its momentum stays, and the next update would be m / eps: the 8-bit run
// diverged that way. Such elements are left alone.
at::Tensor Spam::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    torch::AutoGradMode grad(true);
    loss = closure();
  }
  torch::NoGradGuard no_grad;
  const auto& d = static_cast<const SpamOptions&>(defaults());
  ++step_;
  const int64_t t = step_;
  last_ = SpamStepStats{};
  last_.reset = d.reset_interval() > 0 && t % d.reset_interval() == 0;
  last_.scale = WarmupScale(d, t);
  const bool spike_clip = d.spike_threshold() > 0 && t >= d.clip_delay() &&
                          (d.reset_interval() == 0 || t % d.reset_interval() >= d.clip_delay());
  const auto [beta1, beta2] = d.betas();
  // Clipped-element counts stay on the parameters' device until the step
  // ends: one host read per step, not two per parameter.
  std::vector<at::Tensor> spike_counts, ada_counts;
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const SpamOptions&>(group.options());
    for (at::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;
      LOWBIT_CHECK(!p.grad().is_sparse(), "Spam: sparse gradients are not supported (parameter of shape ", p.sizes(),
                   ")");
      ParamState& s = StateOf(p);
      if (last_.reset) {
        for (kernels::OptimState* st : {&s.m, &s.v}) {
          if (st->quantized()) {
            st->codes.zero_();
            st->absmax.zero_();
          } else {
            st->values.zero_();
          }
        }
        if (d.stable()) s.step = 0;
      }
      ++s.step;
      const at::Tensor raw = p.grad().reshape({-1});
      at::Tensor g = at::where(at::isfinite(raw), raw, at::zeros({}, raw.options()));
      if (spike_clip) {
        const at::Tensor v = Fp32(s.v, false, s.block);
        const at::Tensor bound = (v * d.spike_threshold()).sqrt();
        // See Note [Spikes where v is 0].
        const at::Tensor mask = (g.abs() > bound).logical_and_(v > 0);
        spike_counts.push_back(mask.sum());
        g = at::where(mask, g.sign() * bound, g);
      }
      if (d.stable()) {
        ++s.stat_step;
        const double k = static_cast<double>(s.stat_step);
        const at::Tensor gmax = g.abs().max();
        s.max_abs.mul_(d.gamma3()).add_(gmax, 1.0 - d.gamma3());
        const at::Tensor bound = s.max_abs / (1.0 - std::pow(d.gamma3(), k));
        const at::Tensor mask = g.abs() > bound;
        ada_counts.push_back(mask.sum());
        g = at::where(mask, g / gmax * bound, g);
        const at::Tensor norm = g.norm();
        s.norm_m.mul_(d.gamma1()).add_(norm, 1.0 - d.gamma1());
        s.norm_v.mul_(d.gamma2()).add_(norm.square(), 1.0 - d.gamma2());
        const at::Tensor target = (s.norm_m / (1.0 - std::pow(d.gamma1(), k))) /
                                  ((s.norm_v / (1.0 - std::pow(d.gamma2(), k))).sqrt() + d.eps());
        g = g * at::where(norm > 0, target / norm, at::ones({}, norm.options()));
      }
      const double sd = static_cast<double>(s.step);
      kernels::OptimStepArgs args;
      args.rule = kernels::OptimRule::kAdam;
      args.lr = static_cast<float>(o.lr() * last_.scale / (1.0 - std::pow(beta1, sd)));
      args.beta1 = static_cast<float>(beta1);
      args.one_minus_beta1 = static_cast<float>(1.0 - beta1);
      args.beta2 = static_cast<float>(beta2);
      args.one_minus_beta2 = static_cast<float>(1.0 - beta2);
      args.eps = static_cast<float>(d.eps());
      args.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(beta2, sd)));
      args.decay = static_cast<float>(1.0 - o.lr() * o.weight_decay());
      at::Tensor data = p.view({-1});
      kernels::FusedOptimizerStep(args, data, g.contiguous(), &s.m, &s.v, s.block);
      p.unsafeGetTensorImpl()->bump_version();
    }
  }
  if (!spike_counts.empty()) last_.spike_clipped = at::stack(spike_counts).sum().item<int64_t>();
  if (!ada_counts.empty()) last_.ada_clipped = at::stack(ada_counts).sum().item<int64_t>();
  return loss;
}

int64_t Spam::StateBytes() const {
  int64_t bytes = 0;
  for (const auto& [impl, s] : state_) {
    for (auto& [name, t] : s->Tensors()) {
      if (t->defined()) bytes += t->numel() * static_cast<int64_t>(t->element_size());
    }
  }
  return bytes;
}

at::Tensor Spam::State(const at::Tensor& param, const std::string& name) const {
  LOWBIT_CHECK(name == "m" || name == "v", "Spam::State: name must be 'm' or 'v', got '", name, "'");
  auto it = state_.find(param.unsafeGetTensorImpl());
  if (it == state_.end()) return {};
  const ParamState& s = *it->second;
  return Fp32(name == "m" ? s.m : s.v, name == "m", s.block).view(param.sizes()).clone();
}

// Archive (under "spam_"): "step", "parameters", "group<g>/lr", and for
// parameter i with state "p<i>/step", "p<i>/stat_step", "p<i>/block" and
// its tensors "p<i>/m/values" (or "m/codes" and "m/absmax"), ..., "p<i>/norm_v".
void Spam::save(torch::serialize::OutputArchive& archive) const {
  comm::HookState out{{"step", at::tensor(step_)}};
  size_t i = 0;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    out.emplace_back(absl::StrCat("group", g, "/lr"), at::tensor(param_groups_[g].options().get_lr(), at::kDouble));
    for (const at::Tensor& p : param_groups_[g].params()) {
      auto it = state_.find(p.unsafeGetTensorImpl());
      if (it != state_.end()) {
        ParamState& s = *it->second;
        out.emplace_back(absl::StrCat("p", i, "/step"), at::tensor(s.step));
        out.emplace_back(absl::StrCat("p", i, "/stat_step"), at::tensor(s.stat_step));
        out.emplace_back(absl::StrCat("p", i, "/block"), at::tensor(s.block));
        for (auto& [name, t] : s.Tensors()) {
          if (t->defined()) out.emplace_back(absl::StrCat("p", i, "/", name), *t);
        }
      }
      ++i;
    }
  }
  out.emplace_back("parameters", at::tensor(static_cast<int64_t>(i)));
  comm::WriteHookState(archive, out, kPrefix);
}

void Spam::load(torch::serialize::InputArchive& archive) {
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, tensor] : comm::ReadHookState(archive, kPrefix)) saved[name] = tensor;
  for (const char* key : {"step", "parameters"}) {
    LOWBIT_CHECK(saved.count(key) && saved[key].numel() == 1, "Spam: the archive has no '", key,
                 "' entry; not a Spam state");
  }
  int64_t total = 0;
  for (const auto& group : param_groups_) total += static_cast<int64_t>(group.params().size());
  LOWBIT_CHECK(saved["parameters"].item<int64_t>() == total, "Spam: the archive has state for ",
               saved["parameters"].item<int64_t>(), " parameters, this optimizer has ", total);
  const int64_t step = saved["step"].item<int64_t>();
  LOWBIT_CHECK(step >= 0, "Spam: the archive's step is ", step);
  std::unordered_map<const c10::TensorImpl*, std::unique_ptr<ParamState>> loaded;
  size_t i = 0;
  for (auto& group : param_groups_) {
    for (const at::Tensor& p : group.params()) {
      const std::string key = absl::StrCat("p", i++);
      if (!saved.count(key + "/step")) continue;
      // A fresh state of this optimizer's layout, then every saved tensor into it.
      std::unique_ptr<ParamState> s = NewState(p);
      s->step = saved[key + "/step"].item<int64_t>();
      s->stat_step = saved.count(key + "/stat_step") ? saved[key + "/stat_step"].item<int64_t>() : 0;
      LOWBIT_CHECK(s->step >= 0 && s->stat_step >= 0, "Spam: '", key, "' has a negative step");
      LOWBIT_CHECK(saved.count(key + "/block") && saved[key + "/block"].item<int64_t>() == s->block, "Spam: '", key,
                   "' was saved with another block_size");
      for (auto& [name, t] : s->Tensors()) {
        auto it = saved.find(key + "/" + name);
        LOWBIT_CHECK(t->defined() == (it != saved.end()), "Spam: '", key, "/", name, "' is ",
                     t->defined() ? "missing from the archive" : "in the archive but not in this optimizer's layout",
                     " (state_bits, min_8bit_size or stable differ from the saved run's?)");
        if (!t->defined()) continue;
        LOWBIT_CHECK(it->second.sizes() == t->sizes() && it->second.scalar_type() == t->scalar_type(), "Spam: '", key,
                     "/", name, "' has shape ", it->second.sizes(), " and dtype ", it->second.scalar_type(),
                     ", expected ", t->sizes(), " and ", t->scalar_type());
        t->copy_(it->second);
      }
      loaded[p.unsafeGetTensorImpl()] = std::move(s);
    }
  }
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    auto it = saved.find(absl::StrCat("group", g, "/lr"));
    LOWBIT_CHECK(it != saved.end() && it->second.numel() == 1, "Spam: the archive has no learning rate for group ", g);
    param_groups_[g].options().set_lr(it->second.item<double>());
  }
  state_ = std::move(loaded);
  step_ = step;
}

}  // namespace lowbit::optim
