#include "lowbit/comm/distributed_data_parallel.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <sstream>

#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"

namespace lowbit::comm {

// Note [Gradient sync]
// Each parameter's grad is a plain tensor aliasing its slot in a flat bucket
// (an alias, not an autograd view, so optimizers may detach_() and zero_() it).
// AccumulateGrad adds into it in place; its post hook marks the parameter
// ready, and a bucket whose parameters are all ready is launched, strictly in
// bucket order so every rank issues the same collectives in the same order. If
// something replaced a grad (zero_grad(set_to_none), a fresh first gradient),
// the hook copies it into the slot and points the grad back at the slot. The
// first hook of a backward queues an engine callback that runs at its end:
// parameters that got no gradient are sent as zeros, every bucket is launched
// and waited for, and results that a hook returned out of place are copied
// back. So when backward() returns, every grad holds the mean over ranks.
//
// A backward that throws never runs that callback. The callback owns a
// StepToken, which the engine destroys with the failed pass, before backward()
// rethrows; finding its step still active, the token waits out the exchanges
// already launched (they write into the buckets) and resets the step, so the
// caller's next zero_grad() and backward start clean.

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

const c10::TensorImpl* Key(const at::Tensor& t) { return t.unsafeGetTensorImpl(); }

std::string Describe(const std::string& name, const at::Tensor& t) {
  std::ostringstream out;
  out << name << " " << t.scalar_type() << " " << t.sizes();
  return out.str();
}

}  // namespace

struct DistributedDataParallel::Impl : std::enable_shared_from_this<Impl> {
  struct Slot {
    at::Tensor param;
    std::string name;
    size_t bucket = 0;
    at::Tensor grad_alias;  // the parameter's grad: aliases its bucket slot
    bool ready = false;
  };
  struct Bucket {
    GradBucket grad_bucket;
    std::vector<size_t> slots;
    size_t pending = 0;
    std::shared_ptr<Work> work;
  };

  std::shared_ptr<torch::nn::Module> module;
  std::shared_ptr<ProcessGroup> pg;
  DdpOptions options;
  std::shared_ptr<CommHook> hook;
  bool hook_registered = false;   // RegisterCommHook replaced the default
  std::string hook_owner;         // see RegisterOwnedCommHook
  std::string hook_owner_option;  // the owner's option that takes a hook
  std::vector<Slot> slots;
  // Note [Parameters added after DDP]: the bucketed parameters' and the
  // frozen ones' TensorImpls at construction, sorted.
  std::vector<const c10::TensorImpl*> bucketed_keys;
  std::vector<const c10::TensorImpl*> frozen_keys;
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;

  // Owned by a step's end-of-backward callback (Note [Gradient sync]).
  struct StepToken {
    StepToken(std::weak_ptr<Impl> impl, uint64_t step) : impl(std::move(impl)), step(step) {}
    ~StepToken() {
      if (auto self = impl.lock()) self->OnStepTokenDropped(step);
    }
    std::weak_ptr<Impl> impl;
    uint64_t step;
  };

  std::mutex mu;
  int no_sync_depth = 0;
  bool step_active = false;
  uint64_t step_id = 0;
  size_t next_to_launch = 0;
  double launch_seconds = 0.0;  // this step's time in RunHook
  TrafficCounters traffic_at_start;  // of the active step
  DdpStepStats last;
  // The window DdpStepStats::bytes_sent covers for `last`: from its step's
  // start to the next step's start (window_closed), or to now.
  TrafficCounters last_window_start;
  TrafficCounters last_window_end;
  bool window_closed = true;
  bool has_last = false;  // a step has finished
  // Note [Parameters set by the first forward]: each parameter's version
  // counter when DDP last knew the ranks' parameters to be as they should.
  std::vector<std::pair<at::Tensor, int64_t>> param_versions;

  void BuildBuckets() {
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (const auto& item : module->named_parameters(/*recurse=*/true)) {
      if (item.value().requires_grad()) params.emplace_back(item.key(), item.value());
    }
    // Reverse order: gradients of the last layers are ready first.
    std::map<std::pair<int, int>, size_t> open;  // (dtype, device) -> open bucket
    const auto bytes_cap = [this](size_t bucket_index) {
      const double mb = bucket_index == 0 ? options.first_bucket_mb : options.bucket_cap_mb;
      return static_cast<int64_t>(mb * 1024 * 1024);
    };
    std::vector<int64_t> bucket_bytes;
    for (auto it = params.rbegin(); it != params.rend(); ++it) {
      const at::Tensor& p = it->second;
      const std::pair<int, int> key{static_cast<int>(p.scalar_type()),
                                    static_cast<int>(p.device().type()) * 1000 + p.device().index()};
      const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
      auto found = open.find(key);
      if (found == open.end() || (bucket_bytes[found->second] > 0 &&
                                  bucket_bytes[found->second] + bytes > bytes_cap(found->second))) {
        buckets.emplace_back();
        bucket_bytes.push_back(0);
        open[key] = buckets.size() - 1;
        found = open.find(key);
      }
      Slot slot;
      slot.param = p;
      slot.name = it->first;
      slot.bucket = found->second;
      buckets[found->second].slots.push_back(slots.size());
      bucket_bytes[found->second] += bytes;
      slots.push_back(std::move(slot));
    }
    torch::NoGradGuard no_grad;
    for (size_t b = 0; b < buckets.size(); ++b) {
      Bucket& bucket = buckets[b];
      int64_t total = 0;
      for (size_t s : bucket.slots) total += slots[s].param.numel();
      const at::Tensor& first = slots[bucket.slots.front()].param;
      GradBucket& gb = bucket.grad_bucket;
      gb.index = b;
      gb.is_last = b + 1 == buckets.size();
      gb.buffer = at::zeros({total}, first.options().requires_grad(false));
      int64_t offset = 0;
      for (size_t s : bucket.slots) {
        Slot& slot = slots[s];
        const at::Tensor shaped = gb.buffer.narrow(0, offset, slot.param.numel()).view(slot.param.sizes());
        slot.grad_alias = at::empty({0}, gb.buffer.options())
                              .set_(gb.buffer.storage(), shaped.storage_offset(), shaped.sizes(), shaped.strides());
        if (slot.param.grad().defined()) slot.grad_alias.copy_(slot.param.grad());
        slot.param.mutable_grad() = slot.grad_alias;
        gb.gradients.push_back(slot.grad_alias);
        gb.parameter_names.push_back(slot.name);
        gb.offsets.push_back(offset);
        offset += slot.param.numel();
      }
      bucket.pending = bucket.slots.size();
    }
  }

  // Makes sure slot `s`'s gradient is in its bucket slot (Note [Gradient sync]).
  void AdoptGrad(Slot& slot) {
    at::Tensor grad = slot.param.grad();
    if (grad.defined() && grad.is_same(slot.grad_alias)) return;
    torch::NoGradGuard no_grad;
    if (grad.defined()) {
      slot.grad_alias.copy_(grad);
    } else {
      slot.grad_alias.zero_();
    }
    slot.param.mutable_grad() = slot.grad_alias;
  }

  // Note [Parameters added after DDP]
  // Buckets are built from the parameters the module has when DDP is
  // constructed. A parameter registered later (qat::Prepare's step sizes, a
  // late register_parameter, requires_grad turned on) would train on this
  // rank's gradient alone, and one removed would leave its bucket slot
  // stale: the ranks drift apart with no error. So each synchronised step
  // starts by comparing the module's trainable parameters (by TensorImpl,
  // which Module::load's and a checkpoint's in-place set_/copy_ keep) with
  // the bucketed ones, and throws naming the difference. Every rank whose
  // model changed throws before it launches any collective of the step.
  // A bucketed parameter frozen later is not an error: it gets no gradient
  // and is sent as zeros, like any unused parameter.
  void CheckParameters() {
    std::vector<const c10::TensorImpl*> trainable, all;
    for (const at::Tensor& p : module->parameters(/*recurse=*/true)) {
      all.push_back(Key(p));
      if (p.requires_grad()) trainable.push_back(Key(p));
    }
    std::sort(trainable.begin(), trainable.end());
    if (trainable == bucketed_keys) return;
    std::sort(all.begin(), all.end());
    std::vector<std::string> added, unfrozen, removed;
    for (const auto& item : module->named_parameters(/*recurse=*/true)) {
      const at::Tensor& p = item.value();
      if (!p.requires_grad() || std::binary_search(bucketed_keys.begin(), bucketed_keys.end(), Key(p))) continue;
      (std::binary_search(frozen_keys.begin(), frozen_keys.end(), Key(p)) ? unfrozen : added)
          .push_back(Describe(item.key(), p));
    }
    for (const Slot& slot : slots) {
      if (!std::binary_search(all.begin(), all.end(), Key(slot.param))) removed.push_back(slot.name);
    }
    if (added.empty() && unfrozen.empty() && removed.empty()) return;
    std::string problem;
    if (!added.empty()) {
      absl::StrAppend(&problem, " The model has ", added.size(),
                      " trainable parameter(s) that DDP's buckets do not: ", absl::StrJoin(added, ", "),
                      ". Their gradients would never be averaged. Parameters registered after DDP was built "
                      "(qat::Prepare after DistributedDataParallel, a late register_parameter, a layer replaced by a "
                      "new one) are not seen: call Prepare, and anything else that adds parameters, "
                      "before constructing DistributedDataParallel.");
    }
    if (!unfrozen.empty()) {
      absl::StrAppend(&problem, " Parameter(s) ", absl::StrJoin(unfrozen, ", "),
                      " were frozen (requires_grad false) when DDP was built and train now, unaveraged: set "
                      "requires_grad before constructing DistributedDataParallel.");
    }
    if (!removed.empty()) {
      absl::StrAppend(&problem, " DDP's buckets hold ", removed.size(),
                      " parameter(s) the model no longer has: ", absl::StrJoin(removed, ", "),
                      ". Replace layers before constructing DistributedDataParallel.");
    }
    LOWBIT_CHECK(false, "DistributedDataParallel on rank ", pg->Rank(),
                 ": the model's parameters changed after DDP was built.", problem);
  }

  // Starts a synchronised step if none is active: Finish() runs when this
  // backward pass ends. Called with mu held.
  void BeginStep() {
    if (step_active) return;
    CheckParameters();
    step_active = true;
    traffic_at_start = pg->Traffic();
    if (!window_closed) {
      last_window_end = traffic_at_start;
      window_closed = true;
    }
    std::weak_ptr<Impl> weak = weak_from_this();
    auto token = std::make_shared<StepToken>(weak, ++step_id);
    torch::autograd::Engine::get_default_engine().queue_callback([weak, token] {
      if (auto self = weak.lock()) self->Finish();
    });
  }

  void OnGradReady(size_t s) {
    std::lock_guard<std::mutex> lock(mu);
    if (no_sync_depth > 0) return;
    BeginStep();
    Slot& slot = slots[s];
    LOWBIT_CHECK(!slot.ready, "DistributedDataParallel: parameter '", slot.name,
                 "' got its gradient twice in one synchronised step; run extra backward passes under NoSync()");
    AdoptGrad(slot);
    slot.ready = true;
    --buckets[slot.bucket].pending;
    LaunchReadyBuckets();
  }

  void LaunchReadyBuckets() {
    while (next_to_launch < buckets.size() && buckets[next_to_launch].pending == 0) {
      Bucket& bucket = buckets[next_to_launch++];
      const Clock::time_point start = Clock::now();
      bucket.work = hook->RunHook(bucket.grad_bucket);
      launch_seconds += Seconds(start);
    }
  }

  void Finish() {
    std::lock_guard<std::mutex> lock(mu);
    if (!step_active) return;
    DdpStepStats stats;
    const Clock::time_point start = Clock::now();
    try {
      for (Slot& slot : slots) {
        if (slot.ready) continue;
        AdoptGrad(slot);
        slot.ready = true;
        --buckets[slot.bucket].pending;
        ++stats.unused_parameters;
      }
      LaunchReadyBuckets();
      for (Bucket& bucket : buckets) {
        bucket.work->Wait();
        const std::vector<at::Tensor> result = bucket.work->Result();
        if (!result.empty() && !result[0].is_same(bucket.grad_bucket.buffer)) {
          torch::NoGradGuard no_grad;
          bucket.grad_bucket.buffer.copy_(result[0].view_as(bucket.grad_bucket.buffer));
        }
        // An optional second result is the hook's non-finite flag.
        if (result.size() > 1 && result[1].numel() > 0 && result[1].item<double>() != 0.0) stats.nonfinite = true;
        stats.comm_seconds += bucket.work->Seconds();
        stats.dense_bytes += bucket.grad_bucket.buffer.numel() *
                             static_cast<int64_t>(bucket.grad_bucket.buffer.element_size());
      }
    } catch (...) {
      ResetStep();
      throw;
    }
    stats.wait_seconds = Seconds(start);
    stats.launch_seconds = launch_seconds;
    stats.buckets = static_cast<int>(buckets.size());
    const TrafficCounters now = pg->Traffic();
    stats.exchange_bytes_sent = now.bytes_sent - traffic_at_start.bytes_sent;
    stats.exchange_bytes_received = now.bytes_received - traffic_at_start.bytes_received;
    last = stats;
    last_window_start = traffic_at_start;
    window_closed = false;
    ResetStep();
    if (options.broadcast_buffers) BroadcastBuffers();
    if (!has_last) BroadcastParametersIfWritten();  // See Note [Parameters set by the first forward]
    has_last = true;
  }

  // Step `step`'s callback is gone. If the step is still active, its backward
  // failed: let the launched exchanges finish so that they no longer write
  // into the buckets, then forget the step.
  void OnStepTokenDropped(uint64_t step) {
    std::lock_guard<std::mutex> lock(mu);
    if (!step_active || step != step_id) return;
    for (Bucket& bucket : buckets) {
      if (!bucket.work) continue;
      try {
        bucket.work->Wait();
      } catch (const std::exception&) {
        // The step is being discarded; a broken group fails the next collective.
      }
    }
    ResetStep();
  }

  void ResetStep() {
    for (Slot& slot : slots) slot.ready = false;
    for (Bucket& bucket : buckets) {
      bucket.pending = bucket.slots.size();
      bucket.work.reset();
    }
    next_to_launch = 0;
    launch_seconds = 0.0;
    step_active = false;
  }

  // Broadcasts `tensors` from rank 0, one flat message per dtype.
  void BroadcastFromRankZero(const std::vector<at::Tensor>& tensors) {
    torch::NoGradGuard no_grad;
    std::map<int, std::vector<at::Tensor>> by_dtype;
    for (const auto& t : tensors) by_dtype[static_cast<int>(t.scalar_type())].push_back(t);
    for (auto& [dtype, group] : by_dtype) {
      std::vector<at::Tensor> flat;
      for (const auto& t : group) flat.push_back(t.reshape({-1}));
      at::Tensor message = at::cat(flat);
      pg->Broadcast(message, 0)->Wait();
      int64_t offset = 0;
      for (auto& t : group) {
        t.copy_(message.narrow(0, offset, t.numel()).view_as(t));
        offset += t.numel();
      }
    }
  }

  // Note [Parameters set by the first forward]
  // Some parameters get their values in the first forward, from the batch it
  // sees: a QAT quantizer's LSQ step sizes and PACT clips when Calibrate was
  // skipped. Each rank sees its own batch, so each would start from its own
  // values, and averaged gradients never bring them together. So when the
  // first synchronised backward ends (before any optimizer step), if any
  // rank's parameters were written since DDP broadcast them (their version
  // counters moved), DDP broadcasts rank 0's parameters once more. Writes
  // that leave every rank's own state on purpose come through
  // ParametersRestored (Checkpoint::Restore calls it): a local-step method
  // (DiLoCo) resumed mid-round holds different parameters on each rank.
  void RecordParameterVersions() {
    param_versions.clear();
    for (const at::Tensor& p : module->parameters(/*recurse=*/true)) param_versions.emplace_back(p, p._version());
  }

  void BroadcastParametersIfWritten() {
    if (pg->Size() == 1) return;
    bool written = false;
    for (const auto& [p, version] : param_versions) written = written || p._version() != version;
    at::Tensor any = at::full({1}, written ? 1 : 0, at::kInt);
    pg->AllReduce(any, ReduceOp::kMax)->Wait();  // every rank broadcasts, or none
    if (any.item<int>() == 0) return;
    std::vector<at::Tensor> params = module->parameters(/*recurse=*/true);
    if (!params.empty()) BroadcastFromRankZero(params);
  }

  void BroadcastBuffers() {
    if (pg->Size() == 1) return;
    std::vector<at::Tensor> buffers = module->buffers(/*recurse=*/true);
    if (!buffers.empty()) BroadcastFromRankZero(buffers);
  }
};

namespace {

class GradReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DistributedDataParallel::Impl> impl, size_t slot)
      : impl_(std::move(impl)), slot_(slot) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto impl = impl_.lock()) impl->OnGradReady(slot_);
    return outputs;
  }

 private:
  std::weak_ptr<DistributedDataParallel::Impl> impl_;
  size_t slot_;
};

// Note [Parameters replaced in place]
// Module::load and torch::load set_() each parameter to the loaded tensor,
// and set_() gives a leaf a new gradient accumulator, without the post-hook
// that tells us its gradient is ready: DDP would silently stop averaging
// (every rank stepping on its own gradient). A tensor hook survives set_()
// and runs before the accumulator, so it re-attaches the post-hook to
// whichever accumulator the parameter has now. In that first pass the engine
// has already decided not to run the new accumulator's post-hooks, so the
// step is started here and Finish() takes the parameter's gradient when the
// pass ends (reported as an unused parameter, that once).
void ReattachIfReplaced(const std::weak_ptr<DistributedDataParallel::Impl>& weak, size_t s) {
  auto impl = weak.lock();
  if (impl == nullptr) return;
  std::lock_guard<std::mutex> lock(impl->mu);
  std::shared_ptr<torch::autograd::Node> now = torch::autograd::impl::grad_accumulator(impl->slots[s].param);
  if (now == nullptr || now == impl->accumulators[s]) return;
  now->add_post_hook(std::make_unique<GradReadyHook>(weak, s));
  impl->accumulators[s] = std::move(now);
  // The engine decided before this hook ran that the new accumulator has no
  // post-hooks, so this once the gradient is taken when the pass ends.
  if (impl->no_sync_depth == 0) impl->BeginStep();
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                 std::shared_ptr<ProcessGroup> pg, DdpOptions options)
    : impl_(std::make_shared<Impl>()) {
  LOWBIT_CHECK(module != nullptr, "DistributedDataParallel: module is null");
  LOWBIT_CHECK(pg != nullptr, "DistributedDataParallel: process group is null");
  LOWBIT_CHECK(options.first_bucket_mb > 0, "DistributedDataParallel: first_bucket_mb must be > 0, got ",
               options.first_bucket_mb);
  LOWBIT_CHECK(options.bucket_cap_mb > 0, "DistributedDataParallel: bucket_cap_mb must be > 0, got ",
               options.bucket_cap_mb);
  impl_->module = std::move(module);
  impl_->pg = std::move(pg);
  impl_->options = options;
  impl_->hook = std::make_shared<AllReduceHook>(impl_->pg);

  std::vector<std::string> fingerprint;
  for (const auto& item : impl_->module->named_parameters(true)) {
    fingerprint.push_back("parameter " + Describe(item.key(), item.value()) +
                          (item.value().requires_grad() ? "" : " frozen"));
  }
  for (const auto& item : impl_->module->named_buffers(true)) {
    fingerprint.push_back("buffer " + Describe(item.key(), item.value()));
  }
  // Bucket sizes decide which gradients go into which collective: ranks that
  // disagree would exchange mismatched buckets.
  std::ostringstream opts;
  opts << "options first_bucket_mb=" << options.first_bucket_mb << " bucket_cap_mb=" << options.bucket_cap_mb
       << " broadcast_buffers=" << options.broadcast_buffers;
  fingerprint.push_back(opts.str());
  CheckSameOnAllRanks(*impl_->pg, fingerprint, "model (parameter names, shapes and dtypes) or bucket options",
                      "DistributedDataParallel");
  BroadcastState();

  impl_->BuildBuckets();
  impl_->RecordParameterVersions();
  for (const auto& slot : impl_->slots) impl_->bucketed_keys.push_back(Key(slot.param));
  for (const at::Tensor& p : impl_->module->parameters(true)) {
    if (!p.requires_grad()) impl_->frozen_keys.push_back(Key(p));
  }
  std::sort(impl_->bucketed_keys.begin(), impl_->bucketed_keys.end());
  std::sort(impl_->frozen_keys.begin(), impl_->frozen_keys.end());
  for (size_t s = 0; s < impl_->slots.size(); ++s) {
    auto accumulator = torch::autograd::impl::grad_accumulator(impl_->slots[s].param);
    accumulator->add_post_hook(std::make_unique<GradReadyHook>(impl_, s));
    impl_->accumulators.push_back(std::move(accumulator));
    std::weak_ptr<Impl> weak = impl_;  // See Note [Parameters replaced in place]
    impl_->slots[s].param.register_hook([weak, s](const at::Tensor&) { ReattachIfReplaced(weak, s); });
  }
}

DistributedDataParallel::~DistributedDataParallel() = default;

torch::nn::Module& DistributedDataParallel::module() const { return *impl_->module; }
ProcessGroup& DistributedDataParallel::process_group() const { return *impl_->pg; }
std::shared_ptr<ProcessGroup> DistributedDataParallel::shared_process_group() const { return impl_->pg; }
CommHook& DistributedDataParallel::comm_hook() const { return *impl_->hook; }

namespace {

// The end of an owner's refusal: the option that takes a hook, or that it takes none.
std::string OwnerAdvice(const std::string& owner, const std::string& option) {
  if (option.empty()) return absl::StrCat(" (", owner, " takes no comm hook)");
  return absl::StrCat(" (give that exchange to ", option, " instead)");
}

}  // namespace

void DistributedDataParallel::RegisterCommHook(std::shared_ptr<CommHook> hook) {
  LOWBIT_CHECK(hook != nullptr, "RegisterCommHook: hook is null");
  std::lock_guard<std::mutex> lock(impl_->mu);
  LOWBIT_CHECK(!impl_->step_active, "RegisterCommHook: cannot replace the hook during a backward pass");
  LOWBIT_CHECK(impl_->hook_owner.empty(), "RegisterCommHook: the comm hook belongs to ", impl_->hook_owner,
               ", which does its own exchange; registering '", hook->Name(), "' would silently break it",
               OwnerAdvice(impl_->hook_owner, impl_->hook_owner_option));
  LOWBIT_CHECK(!impl_->hook_registered, "RegisterCommHook: comm hook '", impl_->hook->Config(),
               "' is already registered; registering '", hook->Config(),
               "' would silently replace it (DDP runs one hook). Call UnregisterCommHook() first to switch hooks");
  CheckSameOnAllRanks(*impl_->pg, {hook->Config()}, "comm hook configuration", "DistributedDataParallel");
  // The plain allreduce is the default's own exchange: registering it loses
  // nothing when another hook (or an owning optimizer) takes its place.
  impl_->hook_registered = hook->Config() != AllReduceHook(impl_->pg).Config();
  impl_->hook = std::move(hook);
}

void DistributedDataParallel::UnregisterCommHook() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  LOWBIT_CHECK(!impl_->step_active, "UnregisterCommHook: cannot change the hook during a backward pass");
  LOWBIT_CHECK(impl_->hook_owner.empty(), "UnregisterCommHook: the comm hook belongs to ", impl_->hook_owner,
               ", which does its own exchange");
  impl_->hook = std::make_shared<AllReduceHook>(impl_->pg);
  impl_->hook_registered = false;
}

void DistributedDataParallel::RegisterOwnedCommHook(std::shared_ptr<CommHook> hook, const std::string& owner,
                                                    const std::string& exchange_option) {
  LOWBIT_CHECK(hook != nullptr, owner, ": its comm hook is null");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    LOWBIT_CHECK(impl_->hook_owner.empty(), owner, ": DDP's comm hook already belongs to ", impl_->hook_owner,
                 "; one optimizer owns a DDP's exchange");
    LOWBIT_CHECK(!impl_->hook_registered, owner, " does its own exchange, but comm hook '", impl_->hook->Config(),
                 "' is registered on this DDP and would be silently dropped: do not register it",
                 OwnerAdvice(owner, exchange_option));
  }
  RegisterCommHook(std::move(hook));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->hook_owner = owner;
  impl_->hook_owner_option = exchange_option;
}

std::string DistributedDataParallel::comm_hook_owner() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->hook_owner;
}

void DistributedDataParallel::FinishGradientSync() { impl_->Finish(); }

void DistributedDataParallel::ParametersRestored() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->RecordParameterVersions();
}

void DistributedDataParallel::BroadcastState() {
  if (impl_->pg->Size() == 1) return;
  std::vector<at::Tensor> state;
  for (const auto& p : impl_->module->parameters(true)) state.push_back(p);
  for (const auto& b : impl_->module->buffers(true)) state.push_back(b);
  if (!state.empty()) impl_->BroadcastFromRankZero(state);
}

DdpStepStats DistributedDataParallel::LastStepStats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  DdpStepStats stats = impl_->last;
  if (!impl_->has_last) return stats;
  const TrafficCounters end = impl_->window_closed ? impl_->last_window_end : impl_->pg->Traffic();
  stats.bytes_sent = end.bytes_sent - impl_->last_window_start.bytes_sent;
  stats.bytes_received = end.bytes_received - impl_->last_window_start.bytes_received;
  return stats;
}

std::vector<std::vector<std::string>> DistributedDataParallel::BucketLayout() const {
  std::vector<std::vector<std::string>> layout;
  for (const auto& bucket : impl_->buckets) layout.push_back(bucket.grad_bucket.parameter_names);
  return layout;
}

DistributedDataParallel::NoSyncGuard::NoSyncGuard(DistributedDataParallel* ddp) : ddp_(ddp) {
  std::lock_guard<std::mutex> lock(ddp_->impl_->mu);
  ++ddp_->impl_->no_sync_depth;
}

DistributedDataParallel::NoSyncGuard::NoSyncGuard(NoSyncGuard&& other) noexcept : ddp_(other.ddp_) {
  other.ddp_ = nullptr;
}

DistributedDataParallel::NoSyncGuard::~NoSyncGuard() {
  if (ddp_ == nullptr) return;
  std::lock_guard<std::mutex> lock(ddp_->impl_->mu);
  --ddp_->impl_->no_sync_depth;
}

DistributedDataParallel::NoSyncGuard DistributedDataParallel::NoSync() { return NoSyncGuard(this); }

}  // namespace lowbit::comm
