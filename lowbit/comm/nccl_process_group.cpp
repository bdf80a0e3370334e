#include "lowbit/comm/nccl_process_group.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "lowbit/base/error.h"
#include "lowbit/comm/backends.h"

// Throws with file:line and NCCL's own message.
#define LOWBIT_NCCL_CHECK(call)                                                                                   \
  do {                                                                                                            \
    const ncclResult_t lowbit_nccl_rc_ = (call);                                                                  \
    LOWBIT_CHECK(lowbit_nccl_rc_ == ncclSuccess, #call, " failed at ", ::lowbit::base::SourcePath(__FILE__), ":", \
                 __LINE__, ": ", ncclGetErrorString(lowbit_nccl_rc_));                                            \
  } while (0)

#define LOWBIT_CUDA_CHECK(call)                                                                                   \
  do {                                                                                                            \
    const cudaError_t lowbit_cuda_rc_ = (call);                                                                   \
    LOWBIT_CHECK(lowbit_cuda_rc_ == cudaSuccess, #call, " failed at ", ::lowbit::base::SourcePath(__FILE__), ":", \
                 __LINE__, ": ", cudaGetErrorString(lowbit_cuda_rc_));                                            \
  } while (0)

namespace lowbit::comm {
namespace {

ncclDataType_t NcclType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    default:
      LOWBIT_CHECK(false, "NCCL process group: no NCCL type for dtype ", t);
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

// Owns an ncclComm_t; Abort() tears it down without waiting for peers.
class NcclComm {
 public:
  NcclComm(int size, ncclUniqueId id, int rank) { LOWBIT_NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank)); }
  ~NcclComm() {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  ncclComm_t get() const { return comm_; }
  void Abort() {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  ncclComm_t comm_ = nullptr;
};

}  // namespace

struct NcclProcessGroup::State {
  int device = 0;
  std::unique_ptr<NcclComm> comm;
  c10::optional<c10::cuda::CUDAStream> stream;
  std::mutex mu;  // guards comm against Abort during a launch
};

namespace {

// Completes when the collective's end event fires on the group's stream.
class NcclWork final : public Work {
 public:
  NcclWork(std::string description, std::shared_ptr<NcclProcessGroup::State> state, cudaEvent_t end,
           std::vector<at::Tensor> result, std::chrono::milliseconds timeout, std::function<void()> finisher)
      : description_(std::move(description)), state_(std::move(state)), end_(end), result_(std::move(result)),
        timeout_(timeout), finisher_(std::move(finisher)) {}
  ~NcclWork() override { cudaEventDestroy(end_); }

  void Wait() override {
    if (waited_) {
      LOWBIT_CHECK(error_.empty(), error_);
      return;
    }
    waited_ = true;
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    cudaError_t status;
    while ((status = cudaEventQuery(end_)) == cudaErrorNotReady) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::lock_guard<std::mutex> lock(state_->mu);
        if (state_->comm) state_->comm->Abort();
        error_ = c10::str(description_, " did not complete within ",
                          std::chrono::duration<double>(timeout_).count(),
                          " s: a peer rank has probably died or hung; the NCCL communicator was aborted");
        LOWBIT_CHECK(false, error_);
      }
      std::this_thread::yield();
    }
    if (status != cudaSuccess) {
      error_ = c10::str(description_, " failed: ", cudaGetErrorString(status));
      LOWBIT_CHECK(false, error_);
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (finisher_) finisher_();
  }
  bool IsCompleted() override { return cudaEventQuery(end_) != cudaErrorNotReady; }
  std::vector<at::Tensor> Result() override { return result_; }
  double Seconds() override { return seconds_; }

 private:
  const std::string description_;
  std::shared_ptr<NcclProcessGroup::State> state_;
  cudaEvent_t end_;
  std::vector<at::Tensor> result_;
  std::chrono::milliseconds timeout_;
  std::function<void()> finisher_;
  bool waited_ = false;
  std::string error_;
  double seconds_ = 0.0;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Runs `launch(comm, stream)` on the group's stream after the caller's current
// stream has produced the inputs, keeps the tensors' memory alive for that
// stream, and returns a work that completes with it.
std::shared_ptr<Work> Launch(const std::shared_ptr<NcclProcessGroup::State>& state, std::string description,
                             std::vector<at::Tensor> tensors, std::vector<at::Tensor> result,
                             std::chrono::milliseconds timeout,
                             const std::function<void(ncclComm_t, cudaStream_t)>& launch,
                             std::function<void()> finisher = {}) {
  c10::cuda::CUDAGuard guard(state->device);
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(state->device);
  const cudaStream_t stream = state->stream->stream();
  cudaEvent_t ready, end;
  LOWBIT_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  LOWBIT_CUDA_CHECK(cudaEventRecord(ready, caller.stream()));
  LOWBIT_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
  LOWBIT_CUDA_CHECK(cudaEventDestroy(ready));
  for (const auto& t : tensors) {
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *state->stream);
  }
  {
    std::lock_guard<std::mutex> lock(state->mu);
    LOWBIT_CHECK(state->comm != nullptr, description, ": the NCCL communicator was aborted after an earlier failure");
    launch(state->comm->get(), stream);
  }
  LOWBIT_CUDA_CHECK(cudaEventCreateWithFlags(&end, cudaEventDisableTiming));
  LOWBIT_CUDA_CHECK(cudaEventRecord(end, stream));
  // Later work on the caller's stream sees the collective's results.
  LOWBIT_CUDA_CHECK(cudaStreamWaitEvent(caller.stream(), end, 0));
  return std::make_shared<NcclWork>(std::move(description), state, end, std::move(result), timeout,
                                    std::move(finisher));
}

}  // namespace

NcclProcessGroup::NcclProcessGroup(std::shared_ptr<ProcessGroup> bootstrap, int device, ProcessGroupOptions options)
    : ProcessGroup(options), state_(std::make_shared<State>()) {
  LOWBIT_CHECK(bootstrap != nullptr, "NCCL process group: bootstrap group is null");
  rank_ = bootstrap->Rank();
  size_ = bootstrap->Size();
  state_->device = device;
  c10::cuda::CUDAGuard guard(device);
  ncclUniqueId id;
  at::Tensor id_bytes = at::zeros({static_cast<int64_t>(sizeof(id))}, at::kByte);
  if (rank_ == 0) {
    LOWBIT_NCCL_CHECK(ncclGetUniqueId(&id));
    std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
  }
  bootstrap->Broadcast(id_bytes, 0)->Wait();
  std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
  state_->comm = std::make_unique<NcclComm>(size_, id, rank_);
  state_->stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device);
}

NcclProcessGroup::~NcclProcessGroup() = default;

bool NcclProcessGroup::AcceptsDevice(const at::Tensor& t) const {
  return t.device().is_cuda() && t.device().index() == state_->device;
}

std::shared_ptr<Work> NcclProcessGroup::DoAllReduce(at::Tensor tensor, ReduceOp op) {
  return Launch(state_, Describe("AllReduce", tensor), {tensor}, {tensor}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                                                  NcclType(tensor.scalar_type()), NcclOp(op), comm, stream));
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoAllGather(at::Tensor output, at::Tensor input) {
  return Launch(state_, Describe("AllGather", input), {input, output}, {output}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(),
                                                  NcclType(input.scalar_type()), comm, stream));
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoAllGatherV(at::Tensor input) {
  // Lengths first (a small all-gather, waited for), then one broadcast per rank
  // inside a single NCCL group.
  at::Tensor mine = at::full({1}, input.numel(), input.options().dtype(at::kLong));
  at::Tensor lengths = at::empty({size_}, mine.options());
  DoAllGather(lengths, mine)->Wait();
  const at::Tensor host_lengths = lengths.cpu();
  int64_t total = 0;
  std::vector<int64_t> offsets;
  for (int r = 0; r < size_; ++r) {
    offsets.push_back(total);
    total += host_lengths[r].item<int64_t>();
  }
  at::Tensor output = at::empty({total}, input.options());
  std::vector<at::Tensor> parts;
  for (int r = 0; r < size_; ++r) parts.push_back(output.narrow(0, offsets[r], host_lengths[r].item<int64_t>()));
  const at::Tensor flat = input.reshape({-1});
  const int rank = rank_;
  return Launch(state_, Describe("AllGatherV", input), {flat, output}, parts, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclGroupStart());
                  for (int r = 0; r < static_cast<int>(parts.size()); ++r) {
                    const void* send = r == rank ? flat.data_ptr() : parts[r].data_ptr();
                    LOWBIT_NCCL_CHECK(ncclBroadcast(send, parts[r].data_ptr(), parts[r].numel(),
                                                    NcclType(input.scalar_type()), r, comm, stream));
                  }
                  LOWBIT_NCCL_CHECK(ncclGroupEnd());
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) {
  return Launch(state_, Describe("ReduceScatter", input), {input, output}, {output}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(),
                                                      NcclType(input.scalar_type()), NcclOp(op), comm, stream));
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoAllToAll(at::Tensor output, at::Tensor input) {
  const int64_t chunk = input.numel() / size_;
  const size_t bytes = static_cast<size_t>(chunk) * input.element_size();
  return Launch(state_, Describe("AllToAll", input), {input, output}, {output}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  const auto* in = static_cast<const char*>(input.data_ptr());
                  auto* out = static_cast<char*>(output.data_ptr());
                  LOWBIT_NCCL_CHECK(ncclGroupStart());
                  for (int peer = 0; peer < size_; ++peer) {
                    LOWBIT_NCCL_CHECK(ncclSend(in + peer * bytes, chunk, NcclType(input.scalar_type()), peer, comm, stream));
                    LOWBIT_NCCL_CHECK(ncclRecv(out + peer * bytes, chunk, NcclType(input.scalar_type()), peer, comm, stream));
                  }
                  LOWBIT_NCCL_CHECK(ncclGroupEnd());
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoBroadcast(at::Tensor tensor, int root) {
  return Launch(state_, Describe("Broadcast", tensor), {tensor}, {tensor}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                                                  NcclType(tensor.scalar_type()), root, comm, stream));
                });
}

std::shared_ptr<Work> NcclProcessGroup::DoBarrier() {
  at::Tensor token = at::zeros({1}, at::TensorOptions().device(at::kCUDA, state_->device));
  return Launch(state_, Describe("Barrier", token), {token}, {}, options_.timeout,
                [&](ncclComm_t comm, cudaStream_t stream) {
                  LOWBIT_NCCL_CHECK(ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm, stream));
                });
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateNcclProcessGroup(std::shared_ptr<ProcessGroup> bootstrap,
                                                                      int device, ProcessGroupOptions options) {
  try {
    return std::shared_ptr<ProcessGroup>(std::make_shared<NcclProcessGroup>(std::move(bootstrap), device, options));
  } catch (const std::exception& e) {
    return absl::UnavailableError(std::string("cannot create the NCCL process group on CUDA device ") +
                                  std::to_string(device) + ": " + ::lowbit::base::Message(e));
  }
}

}  // namespace lowbit::comm
