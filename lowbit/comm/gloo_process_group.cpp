#include "lowbit/comm/gloo_process_group.h"

#include <ATen/ATen.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "lowbit/base/error.h"
#include "lowbit/base/torch_compat.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::comm {
namespace {

using C10dWorkPtr = base::compat::C10dWorkPtr<c10d::ProcessGroupGloo>;

c10d::ReduceOp ToC10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMin: return c10d::ReduceOp(c10d::ReduceOp::MIN);
    case ReduceOp::kMax: return c10d::ReduceOp(c10d::ReduceOp::MAX);
    default: return c10d::ReduceOp(c10d::ReduceOp::SUM);  // avg = sum, then scale
  }
}

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// Wraps a c10d work; Wait() rethrows Gloo's error under lowbit's description
// and then runs the local post-processing (scaling, copies, reductions).
class GlooWork final : public Work {
 public:
  GlooWork(std::string description, C10dWorkPtr work, std::vector<at::Tensor> result,
           std::function<void()> finisher)
      : description_(std::move(description)), work_(std::move(work)), result_(std::move(result)),
        finisher_(std::move(finisher)) {}

  void Wait() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!waited_) {
      waited_ = true;
      try {
        work_->wait();
        if (finisher_) finisher_();
      } catch (const std::exception& e) {
        error_ = c10::str(description_, " failed: ", ::lowbit::base::Message(e));
      }
      seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    LOWBIT_CHECK(error_.empty(), error_);
  }
  bool IsCompleted() override { return work_->isCompleted(); }
  std::vector<at::Tensor> Result() override { return result_; }
  double Seconds() override { return seconds_; }

 private:
  const std::string description_;
  C10dWorkPtr work_;
  std::vector<at::Tensor> result_;
  std::function<void()> finisher_;
  std::mutex mu_;
  bool waited_ = false;
  std::string error_;
  double seconds_ = 0.0;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace

struct GlooProcessGroup::State {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

GlooProcessGroup::GlooProcessGroup(const GlooRendezvous& r, ProcessGroupOptions options)
    : ProcessGroup(options), state_(std::make_unique<State>()), rank_(r.rank), size_(r.world_size) {
  LOWBIT_CHECK(r.world_size >= 1, "Gloo process group: world_size must be >= 1, got ", r.world_size);
  LOWBIT_CHECK(r.rank >= 0 && r.rank < r.world_size, "Gloo process group: rank must be in [0, ", r.world_size,
               "), got ", r.rank);
  LOWBIT_CHECK(r.master_port >= 0 && r.master_port <= 65535,
               "Gloo process group: master_port must be in [0, 65535], got ", r.master_port);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(r.master_port);
  store_options.isServer = !r.store_is_external && r.rank == 0;
  store_options.numWorkers = static_cast<size_t>(r.world_size);
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(r.master_addr, store_options);
  state_->store = c10::make_intrusive<c10d::PrefixStore>(r.key_prefix, tcp);

  auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
  if (!r.interface_name.empty()) {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(r.interface_name));
  } else if (IsLoopback(r.master_addr)) {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  state_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(state_->store, r.rank, r.world_size, gloo_options);
}

GlooProcessGroup::~GlooProcessGroup() = default;

std::shared_ptr<Work> GlooProcessGroup::DoAllReduce(at::Tensor tensor, ReduceOp op) {
  // Gloo in LibTorch 1.13 has no bfloat16: reduce a float32 copy.
  at::Tensor wire = tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
  std::vector<at::Tensor> tensors{wire};
  c10d::AllreduceOptions opts;
  opts.reduceOp = ToC10d(op);
  auto work = state_->pg->allreduce(tensors, opts);
  const double factor = op == ReduceOp::kAvg ? 1.0 / size_ : 1.0;
  return std::make_shared<GlooWork>(Describe("AllReduce", tensor), std::move(work),
                                    std::vector<at::Tensor>{tensor}, [tensor, wire, factor]() mutable {
                                      if (factor != 1.0) kernels::ScaleInPlace(wire, factor);
                                      if (!wire.is_same(tensor)) tensor.copy_(wire);
                                    });
}

std::shared_ptr<Work> GlooProcessGroup::DoAllGather(at::Tensor output, at::Tensor input) {
  std::vector<at::Tensor> inputs{input.reshape({-1})};
  std::vector<std::vector<at::Tensor>> outputs(1);
  const int64_t n = input.numel();
  for (int i = 0; i < size_; ++i) outputs[0].push_back(output.reshape({-1}).narrow(0, i * n, n));
  auto work = state_->pg->allgather(outputs, inputs);
  return std::make_shared<GlooWork>(Describe("AllGather", input), std::move(work),
                                    std::vector<at::Tensor>{output}, nullptr);
}

std::shared_ptr<Work> GlooProcessGroup::DoAllGatherV(at::Tensor input) {
  // Exchange the lengths first (synchronously), then gather padded copies.
  at::Tensor lengths = at::empty({size_}, at::kLong);
  at::Tensor mine = at::full({1}, input.numel(), at::kLong);
  DoAllGather(lengths, mine)->Wait();
  const int64_t longest = lengths.max().item<int64_t>();
  at::Tensor padded = at::zeros({longest}, input.options());
  padded.narrow(0, 0, input.numel()).copy_(input.reshape({-1}));
  at::Tensor gathered = at::empty({longest * size_}, input.options());
  auto parts = std::make_shared<std::vector<at::Tensor>>();
  for (int i = 0; i < size_; ++i) {
    parts->push_back(gathered.narrow(0, i * longest, lengths[i].item<int64_t>()));
  }
  auto inner = DoAllGather(gathered, padded);
  return std::make_shared<DeferredResultWork>(std::move(inner), std::move(parts));
}

std::shared_ptr<Work> GlooProcessGroup::DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) {
  // All-to-all of the chunks, then each rank reduces the P chunks it received.
  const bool widen = input.scalar_type() == at::kBFloat16 || input.scalar_type() == at::kHalf;
  at::Tensor wire_in = widen ? input.to(at::kFloat) : input.reshape({-1});
  at::Tensor received = at::empty_like(wire_in);
  std::vector<int64_t> counts;
  auto work = state_->pg->alltoall_base(received, wire_in, counts, counts);
  const int size = size_;
  return std::make_shared<GlooWork>(
      Describe("ReduceScatter", input), std::move(work), std::vector<at::Tensor>{output},
      [output, received, op, size, wire_in]() mutable {
        at::Tensor chunks = received.view({size, -1});
        at::Tensor reduced;
        switch (op) {
          case ReduceOp::kSum: reduced = chunks.sum(0, false, received.scalar_type()); break;
          case ReduceOp::kAvg: reduced = chunks.sum(0, false, received.scalar_type()).div_(size); break;
          case ReduceOp::kMin: reduced = std::get<0>(chunks.min(0)); break;
          case ReduceOp::kMax: reduced = std::get<0>(chunks.max(0)); break;
        }
        output.copy_(reduced.view(output.sizes()));
      });
}

std::shared_ptr<Work> GlooProcessGroup::DoAllToAll(at::Tensor output, at::Tensor input) {
  at::Tensor in = input.reshape({-1});
  at::Tensor out = output.reshape({-1});
  std::vector<int64_t> counts;
  auto work = state_->pg->alltoall_base(out, in, counts, counts);
  return std::make_shared<GlooWork>(Describe("AllToAll", input), std::move(work),
                                    std::vector<at::Tensor>{output}, nullptr);
}

std::shared_ptr<Work> GlooProcessGroup::DoBroadcast(at::Tensor tensor, int root) {
  at::Tensor wire = tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
  std::vector<at::Tensor> tensors{wire};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  auto work = state_->pg->broadcast(tensors, opts);
  return std::make_shared<GlooWork>(Describe("Broadcast", tensor), std::move(work),
                                    std::vector<at::Tensor>{tensor}, [tensor, wire]() mutable {
                                      if (!wire.is_same(tensor)) tensor.copy_(wire);
                                    });
}

std::shared_ptr<Work> GlooProcessGroup::DoBarrier() {
  return std::make_shared<GlooWork>(Describe("Barrier", at::Tensor()), state_->pg->barrier(),
                                    std::vector<at::Tensor>{}, nullptr);
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateGlooProcessGroup(const GlooRendezvous& rendezvous,
                                                                      ProcessGroupOptions options) {
  try {
    return std::shared_ptr<ProcessGroup>(std::make_shared<GlooProcessGroup>(rendezvous, options));
  } catch (const std::exception& e) {
    return absl::UnavailableError(std::string("cannot create the Gloo process group (store at ") +
                                  rendezvous.master_addr + ":" + std::to_string(rendezvous.master_port) + ", rank " +
                                  std::to_string(rendezvous.rank) + " of " + std::to_string(rendezvous.world_size) +
                                  "): " + ::lowbit::base::Message(e));
  }
}

}  // namespace lowbit::comm
