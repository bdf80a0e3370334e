#include "lowbit/optimizers/onebit_optimizer.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <sstream>

#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/builtin_compressors.h"
#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/registry.h"

namespace lowbit::optim {
namespace {

// DDP's hook under a 1-bit optimizer: when the coming step needs averaged
// gradients, a mean allreduce or the optimizer's averaging hook; nothing
// otherwise (the gradients stay local).
class PhaseHook final : public comm::CommHook {
 public:
  PhaseHook(std::shared_ptr<comm::ProcessGroup> pg, std::shared_ptr<std::atomic<bool>> average, std::string owner,
            std::shared_ptr<comm::CommHook> averaging)
      : pg_(std::move(pg)), average_(std::move(average)), owner_(std::move(owner)), averaging_(std::move(averaging)) {}
  std::string Name() const override { return "optimizer"; }
  std::string Config() const override {
    return "optimizer-owned(" + owner_ + (averaging_ ? ",averaging=" + averaging_->Config() : "") + ")";
  }
  std::shared_ptr<comm::Work> RunHook(comm::GradBucket& bucket) override {
    if (average_->load()) {
      if (averaging_) return averaging_->RunHook(bucket);
      return pg_->AllReduce(bucket.buffer, comm::ReduceOp::kAvg);
    }
    return std::make_shared<comm::CompletedWork>(std::vector<at::Tensor>{bucket.buffer});
  }
  comm::HookState StateDict() const override { return {}; }
  void LoadStateDict(const comm::HookState&) override {}

 private:
  std::shared_ptr<comm::ProcessGroup> pg_;
  std::shared_ptr<std::atomic<bool>> average_;
  std::string owner_;
  std::shared_ptr<comm::CommHook> averaging_;
};

std::string ParamKey(size_t i) { return absl::StrCat("p", i); }

}  // namespace

OneBitOptimizer::OneBitOptimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                 std::unique_ptr<torch::optim::OptimizerOptions> defaults,
                                 std::shared_ptr<comm::ProcessGroup> pg, comm::DistributedDataParallel* ddp)
    : torch::optim::Optimizer(std::move(groups), std::move(defaults)),
      pg_(std::move(pg)),
      ddp_(ddp),
      average_next_(std::make_shared<std::atomic<bool>>(true)) {}

OneBitOptimizer::~OneBitOptimizer() = default;

void OneBitOptimizer::Initialize(const std::string& name, const std::string& settings, int64_t block,
                                 std::shared_ptr<comm::CommHook> averaging_hook, const std::string& codec) {
  name_ = name;
  block_ = block;
  codec_ = codec;
  averaging_hook_ = std::move(averaging_hook);
  LOWBIT_CHECK(pg_ != nullptr, name, ": process group is null");
  LOWBIT_CHECK(averaging_hook_ == nullptr || ddp_ != nullptr, name, ": averaging_hook (",
               averaging_hook_ ? averaging_hook_->Config() : "",
               ") needs the optimizer built on a DistributedDataParallel");
  LOWBIT_CHECK(block >= 0 && block % 8 == 0, name, ": block must be 0 or a positive multiple of 8, got ", block);
  if (!codec_.empty()) {
    std::string config;
    try {  // built here on any world size, so a bad spec fails at construction, naming the option
      config = compress::MakeCommHook(pg_, codec_)->Config();
    } catch (const c10::Error& e) {
      LOWBIT_CHECK(false, name, ": codec '", codec_, "': ", base::Message(e));
    }
    LOWBIT_CHECK(config != "allreduce", name, ": codec must compress, got '", codec_,
                 "' (leave it empty for the built-in 1-bit exchange)");
  }
  std::vector<std::string> lines{
      absl::StrCat(name, "(", settings, ",averaging_hook=", averaging_hook_ ? averaging_hook_->Config() : "allreduce",
                   ",codec=", codec_.empty() ? "onebit-twophase" : codec_, ")")};
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    for (const at::Tensor& p : param_groups_[g].params()) {
      const size_t i = params_.size();
      LOWBIT_CHECK(p.scalar_type() == at::kFloat, name, ": parameter ", i, " has dtype ", p.scalar_type(),
                   "; only float32 parameters are supported");
      LOWBIT_CHECK(p.layout() == at::kStrided, name, ": parameter ", i, " is not a dense tensor");
      LOWBIT_CHECK(params_.empty() || p.device() == params_.front().device(), name, ": parameter ", i, " is on ",
                   p.device(), ", parameter 0 on ", params_.front().device(), "; all must share one device");
      std::ostringstream shape;
      shape << "parameter " << i << " " << p.sizes();
      lines.push_back(shape.str());
      params_.push_back(p);
      group_of_.push_back(g);
    }
  }
  LOWBIT_CHECK(!params_.empty(), name, ": no parameters to optimize");
  for (size_t i = 0; i < params_.size(); ++i) exchange_names_.push_back(ParamKey(i));
  if (ddp_ != nullptr) {
    for (const auto& item : ddp_->module().named_parameters(/*recurse=*/true)) {
      for (size_t i = 0; i < params_.size(); ++i) {
        if (params_[i].is_same(item.value())) exchange_names_[i] = item.key();
      }
    }
  }
  slots_.resize(params_.size());
  masks_.resize(params_.size());
  std::string config;
  for (const auto& line : lines) absl::StrAppend(&config, line, "\n");
  config_ = config;
  comm::CheckSameOnAllRanks(*pg_, lines, "settings or parameter shapes", name);
  Reset();
  average_next_->store(AveragesGradientsAt(1));
  if (ddp_ != nullptr) {
    ddp_->RegisterOwnedCommHook(std::make_shared<PhaseHook>(pg_, average_next_, name, averaging_hook_), name,
                                name + "Options::averaging_hook");
  }
}

std::string OneBitOptimizer::CheckGroup(const std::string& name, size_t group, double lr,
                                        const std::tuple<double, double>& betas, double eps, double weight_decay) {
  const std::string where = absl::StrCat(name, " (parameter group ", group, ")");
  LOWBIT_CHECK(lr > 0.0, where, ": lr must be > 0, got ", lr);
  const auto [beta1, beta2] = betas;
  LOWBIT_CHECK(beta1 >= 0.0 && beta1 < 1.0, where, ": beta1 must be in [0, 1), got ", beta1);
  LOWBIT_CHECK(beta2 >= 0.0 && beta2 < 1.0, where, ": beta2 must be in [0, 1), got ", beta2);
  LOWBIT_CHECK(eps > 0.0, where, ": eps must be > 0, got ", eps);
  LOWBIT_CHECK(weight_decay >= 0.0, where, ": weight_decay must be >= 0, got ", weight_decay);
  if (group_bound_.size() <= group) group_bound_.resize(group + 1, 0.0);
  group_bound_[group] = 1.0 / std::sqrt(1.0 - beta2);
  return absl::StrCat(",group", group, "=", beta1, "/", beta2, "/", eps, "/", weight_decay);
}

double OneBitOptimizer::BiasCorrection(double beta, int64_t t, bool on) {
  return on && t > 0 ? 1.0 - std::pow(beta, static_cast<double>(t)) : 1.0;
}

int OneBitOptimizer::world() const { return pg_->Size(); }

int OneBitOptimizer::rank() const { return pg_->Rank(); }

void OneBitOptimizer::Reset() {
  exchange_.reset();
  if (world() == 1) return;
  if (!codec_.empty()) {
    exchange_ = compress::MakeCommHook(pg_, codec_, on_codec_adapt_);
    exchange_->SetOverlap(false);  // step() waits for the exchange at once: no backward to overlap
    return;
  }
  compress::CompressionHookOptions o;
  o.compressor = compress::MakeSignCompressor(block_, /*scale_norm=*/1);
  o.error_feedback = compress::MakeErrorFeedback("ef");
  o.exchange = compress::Exchange::kTwoPhase;
  o.min_compress_numel = 0;
  o.compress_1d = true;
  o.overlap = false;  // step() waits for the exchange at once: no backward to overlap
  exchange_ = std::make_shared<compress::CompressionHook>(pg_, o);
}

void OneBitOptimizer::ResetCompressedMean() { Reset(); }

void OneBitOptimizer::OnCodecAdapt(std::function<void(int64_t, const std::string&)> on_adapt) {
  LOWBIT_CHECK(step_ == 0, name_, ": OnCodecAdapt must come before the first step(); ", step_, " steps taken");
  on_codec_adapt_ = std::move(on_adapt);
  Reset();
}

std::vector<double> OneBitOptimizer::NormalisedBounds() const {
  std::vector<double> bounds;
  for (size_t i = 0; i < params_.size(); ++i) bounds.push_back(group_bound_.at(group_of_[i]));
  return bounds;
}

at::Tensor& OneBitOptimizer::State(size_t i, const std::string& name) {
  at::Tensor& t = slots_.at(i)[name];
  if (!t.defined()) t = at::zeros_like(params_[i], at::MemoryFormat::Contiguous);
  return t;
}

bool OneBitOptimizer::HasState(size_t i, const std::string& name) const { return slots_.at(i).count(name) > 0; }

void OneBitOptimizer::DropState(size_t i, const std::string& name) { slots_.at(i).erase(name); }

double& OneBitOptimizer::Scalar(size_t i, const std::string& name, double initial) {
  at::Tensor& t = slots_.at(i)[name];
  if (!t.defined()) t = at::full({1}, initial, at::kDouble);
  return *t.data_ptr<double>();
}

double OneBitOptimizer::ScalarOr(size_t i, const std::string& name, double fallback) const {
  auto it = slots_.at(i).find(name);
  return it == slots_.at(i).end() ? fallback : it->second.item<double>();
}

void OneBitOptimizer::SetMomentumMask(const at::Tensor& param, const at::Tensor& mask) {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].is_same(param)) continue;
    LOWBIT_CHECK(mask.sizes() == param.sizes(), name_, ": momentum mask of parameter ", i, " has shape ", mask.sizes(),
                 ", the parameter ", param.sizes());
    masks_[i] = mask.to(param.options()).contiguous();
    return;
  }
  LOWBIT_CHECK(false, name_, ": SetMomentumMask: the tensor (shape ", param.sizes(), ") is not one of the ",
               params_.size(), " parameters of this optimizer");
}


bool OneBitOptimizer::CompressedMean(std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& denoms,
                                     const std::vector<at::Tensor>& v, const std::vector<double>& bounds) {
  TORCH_INTERNAL_ASSERT(tensors.size() == params_.size() && denoms.size() == params_.size() &&
                        v.size() == params_.size() && bounds.size() == params_.size());
  last_.compressed = exchange_ != nullptr;
  const auto mask = [&](size_t i) {
    tensors[i].masked_fill_(v[i] == 0, 0.0);
    if (masks_[i].defined()) tensors[i].mul_(masks_[i]);
  };
  if (exchange_ == nullptr) {  // one rank: nothing to average
    for (size_t i = 0; i < tensors.size(); ++i) mask(i);
    return true;
  }
  int64_t total = 0;
  for (const at::Tensor& t : tensors) total += t.numel();
  comm::GradBucket bucket;
  bucket.index = 0;
  bucket.is_last = true;
  bucket.buffer = at::empty({total}, params_.front().options());
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    at::Tensor view = bucket.buffer.narrow(0, offset, tensors[i].numel()).view(tensors[i].sizes());
    at::div_out(view, tensors[i], denoms[i]);
    view.clamp_(-bounds[i], bounds[i]);
    bucket.gradients.push_back(view);
    bucket.parameter_names.push_back(exchange_names_[i]);
    bucket.offsets.push_back(offset);
    offset += tensors[i].numel();
  }
  std::shared_ptr<comm::Work> work = exchange_->RunHook(bucket);
  work->Wait();
  const std::vector<at::Tensor> result = work->Result();
  if (result.size() > 1 && result[1].item<double>() != 0.0) return false;
  // A hook may hand back its mean in a tensor of its own rather than in the bucket.
  if (!result.empty() && !result[0].is_same(bucket.buffer)) bucket.buffer.copy_(result[0].reshape({-1}));
  for (size_t i = 0; i < tensors.size(); ++i) {
    at::mul_out(tensors[i], bucket.gradients[i].view_as(tensors[i]), denoms[i]);
    mask(i);
  }
  return true;
}

at::Tensor OneBitOptimizer::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  const int64_t t = step_ + 1;
  const comm::TrafficCounters before = pg_->Traffic();
  last_ = OneBitStepStats{};
  last_.averaged_gradients = AveragesGradientsAt(t);
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  for (const at::Tensor& p : params_) {
    const at::Tensor& g = p.grad();
    grads.push_back(g.defined() ? g : at::zeros_like(p));
  }
  // Without DDP, the gradients are local: average them here when needed.
  if (last_.averaged_gradients && ddp_ == nullptr && world() > 1) {
    std::vector<at::Tensor> flat;
    for (const at::Tensor& g : grads) flat.push_back(g.reshape({-1}));
    at::Tensor all = at::cat(flat);
    pg_->AllReduce(all, comm::ReduceOp::kAvg)->Wait();
    int64_t offset = 0;
    for (at::Tensor& g : grads) {
      g = all.narrow(0, offset, g.numel()).view_as(g);
      offset += g.numel();
    }
  }
  if (Step(t, grads)) {
    step_ = t;
  } else {
    last_.skipped = true;
  }
  average_next_->store(AveragesGradientsAt(step_ + 1));
  last_.bytes_sent = pg_->Traffic().bytes_sent - before.bytes_sent;
  return loss;
}

// Archive layout: the optimizer's entries as one HookState ("step",
// "world_size", "p<i>/<state>", the derived optimizer's extras), the
// exchange's errors as a second one under "exchange_", and the averaging
// hook's state, when it has one, under "averaging_".
void OneBitOptimizer::save(torch::serialize::OutputArchive& archive) const {
  comm::HookState state{{"step", at::tensor(step_)},
                        {"world_size", at::tensor(static_cast<int64_t>(world()))},
                        {"parameters", at::tensor(static_cast<int64_t>(params_.size()))}};
  for (size_t i = 0; i < slots_.size(); ++i) {
    for (const auto& [name, tensor] : slots_[i]) state.emplace_back(ParamKey(i) + "/" + name, tensor);
  }
  SaveExtra(&state);
  comm::WriteHookState(archive, state, "state_");
  comm::WriteHookState(archive, exchange_ ? exchange_->StateDict() : comm::HookState{}, "exchange_");
  if (averaging_hook_) comm::WriteHookState(archive, averaging_hook_->StateDict(), "averaging_");
}

void OneBitOptimizer::load(torch::serialize::InputArchive& archive) {
  const comm::HookState state = comm::ReadHookState(archive, "state_");
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, tensor] : state) by_name[name] = tensor;
  for (const char* key : {"step", "world_size", "parameters"}) {
    LOWBIT_CHECK(by_name.count(key), name_, ": the archive has no '", key, "' entry; not a ", name_, " state");
  }
  const int64_t count = by_name["parameters"].item<int64_t>();
  LOWBIT_CHECK(count == static_cast<int64_t>(params_.size()), name_, ": the archive holds state for ", count,
               " parameters, this optimizer has ", params_.size());
  std::vector<std::map<std::string, at::Tensor>> slots(params_.size());
  std::map<std::string, at::Tensor> extra;
  for (const auto& [name, tensor] : by_name) {
    const size_t slash = name.find('/');
    if (name.rfind('p', 0) != 0 || slash == std::string::npos) {
      extra[name] = tensor;
      continue;
    }
    const size_t i = std::stoul(name.substr(1, slash - 1));
    LOWBIT_CHECK(i < params_.size(), name_, ": archive entry '", name, "' names a parameter out of range");
    // Parameters are float32; per-parameter scalars are one double.
    const bool scalar = tensor.scalar_type() == at::kDouble;
    LOWBIT_CHECK(scalar ? tensor.numel() == 1 : tensor.sizes() == params_[i].sizes(), name_, ": archive entry '", name,
                 "' has shape ", tensor.sizes(), ", parameter ", i, " has ", params_[i].sizes());
    slots[i][name.substr(slash + 1)] = tensor.to(scalar ? at::TensorOptions(at::kDouble) : params_[i].options()).clone();
  }
  const int64_t saved_world = by_name["world_size"].item<int64_t>();
  slots_ = std::move(slots);
  step_ = by_name["step"].item<int64_t>();
  LoadExtra(extra);
  Reset();
  const comm::HookState errors = comm::ReadHookState(archive, "exchange_");
  if (exchange_ != nullptr && !errors.empty()) {
    exchange_->LoadStateDict(errors);  // warns and starts afresh on another world size
  } else if (saved_world != world()) {
    base::Warn(c10::str(name_, ": state saved by ", saved_world, " ranks, loaded on ", world(),
                        "; the compression errors start afresh"));
  }
  if (averaging_hook_) {
    at::Tensor names;
    LOWBIT_CHECK(archive.try_read("averaging_names", names), name_, ": this optimizer has an averaging hook (",
                 averaging_hook_->Config(), ") but the archive holds no state for it; was it saved without one?");
    averaging_hook_->LoadStateDict(comm::ReadHookState(archive, "averaging_"));
  }
  average_next_->store(AveragesGradientsAt(step_ + 1));
}

}  // namespace lowbit::optim
