#include "lowbit/optimizers/diloco.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::optim {

DiLoCo::DiLoCo(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, DiLoCoOptions options)
    : params_(std::move(params)), pg_(std::move(pg)), options_(std::move(options)) {
  LOWBIT_CHECK(pg_ != nullptr, "DiLoCo: process group is null");
  LOWBIT_CHECK(options_.sync_every() >= 1, "DiLoCo: sync_every must be >= 1, got ", options_.sync_every());
  LOWBIT_CHECK(options_.outer_lr() > 0.0, "DiLoCo: outer_lr must be > 0, got ", options_.outer_lr());
  LOWBIT_CHECK(options_.outer_momentum() >= 0.0 && options_.outer_momentum() < 1.0,
               "DiLoCo: outer_momentum must be in [0, 1), got ", options_.outer_momentum());
  LOWBIT_CHECK(!params_.empty(), "DiLoCo: no parameters");
  const int64_t h = options_.sync_every(), p_count = options_.fragments(), tau = options_.fragment_delay();
  LOWBIT_CHECK(p_count >= 1 && p_count <= static_cast<int64_t>(params_.size()), "DiLoCo: fragments must be in [1, ",
               params_.size(), "] (the number of parameter tensors), got ", p_count);
  LOWBIT_CHECK(p_count <= h, "DiLoCo: fragments (", p_count, ") must be <= sync_every (", h,
               "): the fragments sync one at a time, each once every sync_every steps");
  LOWBIT_CHECK(tau >= 0 && tau < h / p_count, "DiLoCo: fragment_delay must be in [0, sync_every / fragments) = [0, ",
               h / p_count, ") so that a fragment lands before the next starts, got ", tau);
  LOWBIT_CHECK(options_.merge_alpha() >= 0.0 && options_.merge_alpha() <= 1.0,
               "DiLoCo: merge_alpha must be in [0, 1], got ", options_.merge_alpha());
  std::vector<std::string> lines{
      absl::StrCat("DiLoCo(sync_every=", h, ",outer_lr=", options_.outer_lr(),
                   ",outer_momentum=", options_.outer_momentum(), ",nesterov=", options_.nesterov(),
                   ",fragments=", p_count, ",fragment_delay=", tau, ",merge_alpha=", options_.merge_alpha(),
                   ",exchange=", options_.exchange_hook() ? options_.exchange_hook()->Config() : "allreduce", ")")};
  // An exchange in flight across inner steps must have started its
  // collectives before Step() returns: the caller may run others meanwhile
  // (a loss average, an evaluation), and the ranks must issue theirs in one
  // order.
  if (tau > 0 && options_.exchange_hook()) options_.exchange_hook()->SetOverlap(false);
  std::vector<int64_t> cumulative{0};
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i];
    LOWBIT_CHECK(p.defined() && p.scalar_type() == at::kFloat && p.layout() == at::kStrided, "DiLoCo: parameter ", i,
                 " must be a dense float32 tensor, got ", p.defined() ? toString(p.scalar_type()) : "undefined");
    LOWBIT_CHECK(p.device() == params_.front().device(), "DiLoCo: parameter ", i, " is on ", p.device(),
                 ", parameter 0 on ", params_.front().device(), "; all must share one device");
    std::ostringstream shape;
    shape << "parameter " << i << " " << p.sizes();
    lines.push_back(shape.str());
    cumulative.push_back(cumulative.back() + p.numel());
  }
  config_.clear();
  for (const auto& line : lines) absl::StrAppend(&config_, line, "\n");
  comm::CheckSameOnAllRanks(*pg_, lines, "settings or parameter shapes", "DiLoCo");

  // Note [DiLoCo's fragments]
  // Runs of consecutive tensors of about total / P elements each: fragment p
  // ends at the tensor boundary nearest to (p + 1) total / P, leaving at
  // least one tensor to each later fragment.
  const int64_t n = static_cast<int64_t>(params_.size());
  const int64_t total = cumulative.back();
  size_t first = 0;
  int64_t largest = 0;
  for (int64_t f = 0; f < p_count; ++f) {
    size_t end = params_.size();
    if (f + 1 < p_count) {
      const double target = static_cast<double>(total) * static_cast<double>(f + 1) / static_cast<double>(p_count);
      end = first + 1;
      while (static_cast<int64_t>(end) < n - (p_count - 1 - f) &&
             std::abs(static_cast<double>(cumulative[end + 1]) - target) <=
                 std::abs(static_cast<double>(cumulative[end]) - target)) {
        ++end;
      }
    }
    Fragment frag;
    frag.first = first;
    frag.end = end;
    frag.numel = cumulative[end] - cumulative[first];
    frag.offset = h * (f + 1) / p_count;
    largest = std::max(largest, frag.numel);
    fragments_.push_back(std::move(frag));
    first = end;
  }

  torch::NoGradGuard no_grad;
  // Every rank starts from rank 0's parameters (ranks whose models were
  // initialised differently would otherwise each keep their own global copy
  // and never agree).
  at::Tensor all = at::empty({total}, params_.front().options().requires_grad(false));
  for (size_t i = 0; i < params_.size(); ++i)
    all.narrow(0, cumulative[i], params_[i].numel()).copy_(params_[i].detach().reshape({-1}));
  pg_->Broadcast(all, 0)->Wait();
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].detach().copy_(all.narrow(0, cumulative[i], params_[i].numel()).view(params_[i].sizes()));
    global_.push_back(params_[i].detach().clone());
    if (options_.outer_momentum() > 0.0) momentum_.push_back(at::zeros_like(global_.back()));
  }
  flat_ = largest == total ? all : at::empty({largest}, all.options());
  for (size_t f = 0; f < fragments_.size(); ++f) {
    Fragment& frag = fragments_[f];
    comm::GradBucket& b = frag.bucket;
    b.index = f;
    b.is_last = true;
    b.buffer = flat_.narrow(0, 0, frag.numel);
    for (size_t i = frag.first; i < frag.end; ++i) {
      const int64_t offset = cumulative[i] - cumulative[frag.first];
      b.gradients.push_back(b.buffer.narrow(0, offset, params_[i].numel()).view(params_[i].sizes()));
      b.parameter_names.push_back(absl::StrCat("param", i));
      b.offsets.push_back(offset);
    }
  }
}

DiLoCo::DiLoCo(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, DiLoCoOptions options)
    : DiLoCo(std::move(params), ddp.shared_process_group(), std::move(options)) {
  ddp.RegisterOwnedCommHook(std::make_shared<comm::LocalHook>(), "DiLoCo", "DiLoCoOptions::exchange_hook");
}

DiLoCo::~DiLoCo() {
  // A fragment still in flight: let its collectives end before the buffers
  // go (an error here has nobody left to tell).
  for (Fragment& f : fragments_) {
    if (!f.work) continue;
    try {
      f.work->Wait();
    } catch (...) {
    }
  }
}

int64_t DiLoCo::StateBytesPerElement() const { return options_.outer_momentum() > 0.0 ? 8 : 4; }

int64_t DiLoCo::WorkingBytes() const { return flat_.numel() * 4; }

std::vector<std::pair<int64_t, int64_t>> DiLoCo::Fragments() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const Fragment& f : fragments_) out.emplace_back(f.first, f.end);
  return out;
}

int64_t DiLoCo::StartingAt(int64_t s) const {
  for (size_t p = 0; p < fragments_.size(); ++p) {
    const int64_t offset = fragments_[p].offset;
    if (s >= offset && (s - offset) % options_.sync_every() == 0) return static_cast<int64_t>(p);
  }
  return -1;
}

void DiLoCo::Step() {
  ++step_;
  last_ = DiLoCoStepStats{};
  const comm::TrafficCounters before = pg_->Traffic();
  const int64_t starting = StartingAt(step_);
  if (starting >= 0) Start(fragments_[starting]);
  for (Fragment& f : fragments_) {
    if (f.started > 0 && step_ == f.started + options_.fragment_delay()) Land(f);
  }
  last_.bytes_sent = pg_->Traffic().bytes_sent - before.bytes_sent;
}

void DiLoCo::Start(Fragment& f) {
  torch::NoGradGuard no_grad;
  for (size_t i = f.first; i < f.end; ++i) {
    at::sub_out(f.bucket.gradients[i - f.first], global_[i], params_[i].detach());
  }
  f.started = step_;
  f.work = options_.exchange_hook() ? options_.exchange_hook()->RunHook(f.bucket)
                                    : pg_->AllReduce(f.bucket.buffer, comm::ReduceOp::kAvg);
  last_.started = true;
}

void DiLoCo::Arrive(Fragment& f) {
  f.work->Wait();
  bool bad = false;
  if (options_.exchange_hook()) {
    const std::vector<at::Tensor> result = f.work->Result();
    if (!result.empty() && !result[0].is_same(f.bucket.buffer))
      f.bucket.buffer.copy_(result[0].view_as(f.bucket.buffer));
    bad = result.size() > 1 && result[1].numel() > 0 && result[1].item<double>() != 0.0;
  } else {
    // The ranks' mean is the same bits everywhere, so all see the same answer.
    bad = !kernels::AllFinite(f.bucket.buffer);
  }
  f.work.reset();
  f.bad = bad;
}

// Note [DiLoCo's outer step]
// The outer optimizer is torch::optim::SGD's rule with dampening 0, written
// out here so that its state lives with DiLoCo's: buf = m buf + delta (buf
// starts at 0, so the first is delta, as torch's clone), then
// theta_global -= lr (delta + m buf) with Nesterov, lr buf without.
void DiLoCo::Land(Fragment& f) {
  if (f.work) Arrive(f);
  torch::NoGradGuard no_grad;
  last_.synced = true;
  last_.nonfinite = last_.nonfinite || f.bad;
  const double m = options_.outer_momentum(), alpha = options_.merge_alpha();
  for (size_t i = f.first; i < f.end; ++i) {
    if (!f.bad) {
      const at::Tensor& delta = f.bucket.gradients[i - f.first];
      if (m > 0.0) {
        momentum_[i].mul_(m).add_(delta);
        if (options_.nesterov()) {
          global_[i].sub_(delta.add(momentum_[i], m), options_.outer_lr());
        } else {
          global_[i].sub_(momentum_[i], options_.outer_lr());
        }
      } else {
        global_[i].sub_(delta, options_.outer_lr());
      }
    }
    // A bad exchange drops the local steps (every rank goes back to the last
    // global parameters) whatever alpha.
    if (f.bad || alpha == 0.0) {
      params_[i].detach().copy_(global_[i]);
    } else {
      params_[i].detach().mul_(alpha).add_(global_[i], 1.0 - alpha);
    }
  }
  f.started = 0;
}

void DiLoCo::Save(torch::serialize::OutputArchive& archive) {
  // The global copy and momentum are the same on every rank, so they resume on
  // any world size; a stateful hook decides for its own state.
  comm::HookState state{{"step", at::tensor(step_)},
                        {"parameters", at::tensor(static_cast<int64_t>(params_.size()))},
                        {"fragments", at::tensor(options_.fragments())}};
  for (size_t p = 0; p < fragments_.size(); ++p) {
    Fragment& f = fragments_[p];
    if (f.started == 0) continue;
    if (f.work) Arrive(f);
    state.emplace_back("inflight/fragment", at::tensor(static_cast<int64_t>(p)));
    state.emplace_back("inflight/bad", at::tensor(static_cast<int64_t>(f.bad)));
    state.emplace_back("inflight/delta", f.bucket.buffer.clone());
  }
  for (size_t i = 0; i < global_.size(); ++i) state.emplace_back(absl::StrCat("global/", i), global_[i]);
  for (size_t i = 0; i < momentum_.size(); ++i) state.emplace_back(absl::StrCat("momentum/", i), momentum_[i]);
  comm::WriteHookState(archive, state, "diloco_");
  if (options_.exchange_hook())
    comm::WriteHookState(archive, options_.exchange_hook()->StateDict(), "diloco_exchange_");
}

void DiLoCo::Load(torch::serialize::InputArchive& archive) {
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, tensor] : comm::ReadHookState(archive, "diloco_")) saved[name] = tensor;
  for (const char* key : {"step", "parameters", "fragments"}) {
    LOWBIT_CHECK(saved.count(key) && saved[key].numel() == 1, "DiLoCo: the archive has no '", key,
                 "' entry; not a DiLoCo state");
  }
  const int64_t count = saved["parameters"].item<int64_t>();
  LOWBIT_CHECK(count == static_cast<int64_t>(params_.size()), "DiLoCo: the archive holds state for ", count,
               " parameters, this DiLoCo has ", params_.size());
  const int64_t step = saved["step"].item<int64_t>();
  LOWBIT_CHECK(step >= 0, "DiLoCo: the archive's step is ", step);
  LOWBIT_CHECK(saved["fragments"].item<int64_t>() == options_.fragments(), "DiLoCo: the archive was saved with ",
               saved["fragments"].item<int64_t>(), " fragments, this DiLoCo has ", options_.fragments());
  // Which fragment the schedule has in flight after `step`: the one started
  // at a step in (step - tau, step].
  int64_t inflight = -1, inflight_since = 0;
  for (int64_t s = step; s > std::max<int64_t>(0, step - options_.fragment_delay()); --s) {
    if (StartingAt(s) >= 0) {
      inflight = StartingAt(s);
      inflight_since = s;
      break;
    }
  }
  const bool saved_inflight = saved.count("inflight/fragment") > 0;
  LOWBIT_CHECK(
      saved_inflight == (inflight >= 0) && (!saved_inflight || saved["inflight/fragment"].item<int64_t>() == inflight),
      "DiLoCo: at step ", step, " the schedule has ",
      inflight >= 0 ? absl::StrCat("fragment ", inflight) : std::string("no fragment"), " in flight, the archive ",
      saved_inflight ? absl::StrCat("fragment ", saved["inflight/fragment"].item<int64_t>()) : "none");
  auto load = [&](const std::string& name, size_t i, at::Tensor& into) {
    auto it = saved.find(name);
    LOWBIT_CHECK(it != saved.end(), "DiLoCo: the archive has no '", name, "' entry (saved with other settings?)");
    LOWBIT_CHECK(it->second.sizes() == params_[i].sizes() && it->second.scalar_type() == at::kFloat,
                 "DiLoCo: archive entry '", name, "' has shape ", it->second.sizes(), " and dtype ",
                 it->second.scalar_type(), ", parameter ", i, " is ", params_[i].sizes(), " float");
    into.copy_(it->second);
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < global_.size(); ++i) load(absl::StrCat("global/", i), i, global_[i]);
  for (size_t i = 0; i < momentum_.size(); ++i) load(absl::StrCat("momentum/", i), i, momentum_[i]);
  if (options_.exchange_hook()) {
    at::Tensor names;
    LOWBIT_CHECK(archive.try_read("diloco_exchange_names", names), "DiLoCo: this DiLoCo has an exchange hook (",
                 options_.exchange_hook()->Config(), ") but the archive holds no state for it");
    options_.exchange_hook()->LoadStateDict(comm::ReadHookState(archive, "diloco_exchange_"));
  }
  for (Fragment& f : fragments_) {
    if (f.work) f.work->Wait();  // a Load() mid-exchange: let it end before the buffer is reused
    f.work.reset();
    f.started = 0;
  }
  if (inflight >= 0) {
    Fragment& f = fragments_[inflight];
    const at::Tensor& delta = saved["inflight/delta"];
    LOWBIT_CHECK(delta.numel() == f.numel && delta.scalar_type() == at::kFloat,
                 "DiLoCo: archive entry 'inflight/delta' has ", delta.numel(), " elements, fragment ", inflight,
                 " has ", f.numel);
    LOWBIT_CHECK(saved.count("inflight/bad") && saved["inflight/bad"].numel() == 1,
                 "DiLoCo: the archive has no 'inflight/bad' entry");
    f.bucket.buffer.copy_(delta.reshape({-1}));
    f.started = inflight_since;
    f.bad = saved["inflight/bad"].item<int64_t>() != 0;
  }
  step_ = step;
}

}  // namespace lowbit::optim
