#include "lowbit/optimizers/diloco.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/serialize/archive.h>

#include <map>
#include <sstream>

#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::optim {

DiLoCo::DiLoCo(std::vector<at::Tensor> params, std::shared_ptr<comm::ProcessGroup> pg, DiLoCoOptions options)
    : params_(std::move(params)), pg_(std::move(pg)), options_(std::move(options)) {
  TORCH_CHECK(pg_ != nullptr, "DiLoCo: process group is null");
  TORCH_CHECK(options_.sync_every() >= 1, "DiLoCo: sync_every must be >= 1, got ", options_.sync_every());
  TORCH_CHECK(options_.outer_lr() > 0.0, "DiLoCo: outer_lr must be > 0, got ", options_.outer_lr());
  TORCH_CHECK(options_.outer_momentum() >= 0.0 && options_.outer_momentum() < 1.0,
              "DiLoCo: outer_momentum must be in [0, 1), got ", options_.outer_momentum());
  TORCH_CHECK(!params_.empty(), "DiLoCo: no parameters");
  std::vector<std::string> lines{absl::StrCat(
      "DiLoCo(sync_every=", options_.sync_every(), ",outer_lr=", options_.outer_lr(),
      ",outer_momentum=", options_.outer_momentum(), ",nesterov=", options_.nesterov(), ",exchange=",
      options_.exchange_hook() ? options_.exchange_hook()->Config() : "allreduce", ")")};
  int64_t total = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i];
    TORCH_CHECK(p.defined() && p.scalar_type() == at::kFloat && p.layout() == at::kStrided, "DiLoCo: parameter ", i,
                " must be a dense float32 tensor, got ", p.defined() ? toString(p.scalar_type()) : "undefined");
    TORCH_CHECK(p.device() == params_.front().device(), "DiLoCo: parameter ", i, " is on ", p.device(),
                ", parameter 0 on ", params_.front().device(), "; all must share one device");
    std::ostringstream shape;
    shape << "parameter " << i << " " << p.sizes();
    lines.push_back(shape.str());
    total += p.numel();
  }
  config_.clear();
  for (const auto& line : lines) absl::StrAppend(&config_, line, "\n");
  comm::CheckSameOnAllRanks(*pg_, lines, "settings or parameter shapes", "DiLoCo");

  torch::NoGradGuard no_grad;
  flat_ = at::zeros({total}, params_.front().options().requires_grad(false));
  bucket_.buffer = flat_;
  bucket_.is_last = true;
  int64_t offset = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i];
    bucket_.gradients.push_back(flat_.narrow(0, offset, p.numel()).view(p.sizes()));
    bucket_.parameter_names.push_back(absl::StrCat("param", i));
    bucket_.offsets.push_back(offset);
    offset += p.numel();
  }
  // Every rank starts from rank 0's parameters (ranks whose models were
  // initialised differently would otherwise each keep their own global copy
  // and never agree); the pseudo-gradient buffer carries them.
  for (size_t i = 0; i < params_.size(); ++i) bucket_.gradients[i].copy_(params_[i].detach());
  pg_->Broadcast(flat_, 0)->Wait();
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].detach().copy_(bucket_.gradients[i]);
    global_.push_back(bucket_.gradients[i].clone());
    if (options_.outer_momentum() > 0.0) momentum_.push_back(at::zeros_like(global_.back()));
  }
}

DiLoCo::DiLoCo(std::vector<at::Tensor> params, comm::DistributedDataParallel& ddp, DiLoCoOptions options)
    : DiLoCo(std::move(params), ddp.shared_process_group(), std::move(options)) {
  ddp.RegisterOwnedCommHook(std::make_shared<comm::LocalHook>(), "DiLoCo");
}

DiLoCo::~DiLoCo() = default;

int64_t DiLoCo::StateBytesPerElement() const { return options_.outer_momentum() > 0.0 ? 8 : 4; }

void DiLoCo::Step() {
  ++step_;
  last_ = DiLoCoStepStats{};
  if (step_ % options_.sync_every() == 0) Sync();
}

// Note [DiLoCo's outer step]
// The outer optimizer is torch::optim::SGD's rule with dampening 0, written
// out here so that its state lives with DiLoCo's: buf = m buf + delta (buf
// starts at 0, so the first is delta, as torch's clone), then
// theta_global -= lr (delta + m buf) with Nesterov, lr buf without.
void DiLoCo::Sync() {
  torch::NoGradGuard no_grad;
  const comm::TrafficCounters before = pg_->Traffic();
  last_.synced = true;
  for (size_t i = 0; i < params_.size(); ++i) at::sub_out(bucket_.gradients[i], global_[i], params_[i].detach());
  bool bad = false;
  if (options_.exchange_hook()) {
    std::shared_ptr<comm::Work> work = options_.exchange_hook()->RunHook(bucket_);
    work->Wait();
    const std::vector<at::Tensor> result = work->Result();
    if (!result.empty() && !result[0].is_same(flat_)) flat_.copy_(result[0].view_as(flat_));
    bad = result.size() > 1 && result[1].numel() > 0 && result[1].item<double>() != 0.0;
  } else {
    // The ranks' sum is the same bits everywhere, so all see the same answer.
    pg_->AllReduce(flat_, comm::ReduceOp::kAvg)->Wait();
    bad = !kernels::AllFinite(flat_);
  }
  last_.nonfinite = bad;
  if (!bad) {
    const double m = options_.outer_momentum();
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& delta = bucket_.gradients[i];
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
  }
  for (size_t i = 0; i < params_.size(); ++i) params_[i].detach().copy_(global_[i]);
  last_.bytes_sent = pg_->Traffic().bytes_sent - before.bytes_sent;
}

void DiLoCo::Save(torch::serialize::OutputArchive& archive) const {
  // The global copy and momentum are the same on every rank, so they resume on
  // any world size; a stateful hook decides for its own state.
  comm::HookState state{{"step", at::tensor(step_)},
                        {"parameters", at::tensor(static_cast<int64_t>(params_.size()))}};
  for (size_t i = 0; i < global_.size(); ++i) state.emplace_back(absl::StrCat("global/", i), global_[i]);
  for (size_t i = 0; i < momentum_.size(); ++i) state.emplace_back(absl::StrCat("momentum/", i), momentum_[i]);
  comm::WriteHookState(archive, state, "diloco_");
  if (options_.exchange_hook()) comm::WriteHookState(archive, options_.exchange_hook()->StateDict(), "diloco_exchange_");
}

void DiLoCo::Load(torch::serialize::InputArchive& archive) {
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, tensor] : comm::ReadHookState(archive, "diloco_")) saved[name] = tensor;
  for (const char* key : {"step", "parameters"}) {
    TORCH_CHECK(saved.count(key) && saved[key].numel() == 1, "DiLoCo: the archive has no '", key,
                "' entry; not a DiLoCo state");
  }
  const int64_t count = saved["parameters"].item<int64_t>();
  TORCH_CHECK(count == static_cast<int64_t>(params_.size()), "DiLoCo: the archive holds state for ", count,
              " parameters, this DiLoCo has ", params_.size());
  const int64_t step = saved["step"].item<int64_t>();
  TORCH_CHECK(step >= 0, "DiLoCo: the archive's step is ", step);
  auto load = [&](const std::string& name, size_t i, at::Tensor& into) {
    auto it = saved.find(name);
    TORCH_CHECK(it != saved.end(), "DiLoCo: the archive has no '", name, "' entry (saved with other settings?)");
    TORCH_CHECK(it->second.sizes() == params_[i].sizes() && it->second.scalar_type() == at::kFloat,
                "DiLoCo: archive entry '", name, "' has shape ", it->second.sizes(), " and dtype ",
                it->second.scalar_type(), ", parameter ", i, " is ", params_[i].sizes(), " float");
    into.copy_(it->second);
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < global_.size(); ++i) load(absl::StrCat("global/", i), i, global_[i]);
  for (size_t i = 0; i < momentum_.size(); ++i) load(absl::StrCat("momentum/", i), i, momentum_[i]);
  if (options_.exchange_hook()) {
    at::Tensor names;
    TORCH_CHECK(archive.try_read("diloco_exchange_names", names), "DiLoCo: this DiLoCo has an exchange hook (",
                options_.exchange_hook()->Config(), ") but the archive holds no state for it");
    options_.exchange_hook()->LoadStateDict(comm::ReadHookState(archive, "diloco_exchange_"));
  }
  step_ = step;
}

}  // namespace lowbit::optim
