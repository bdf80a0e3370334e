// NcclProcessGroup: lowbit's collectives over NCCL, for CUDA tensors.
//
// Collectives run on the group's own CUDA stream after everything already
// queued on the caller's current stream (an event orders them). Wait() blocks
// the host until the collective finished; past the timeout it aborts the NCCL
// communicator (ncclCommAbort) and throws, so a dead peer never hangs a rank.
// The unique id travels through a bootstrap group (MPI or Gloo) of the same ranks.
//
//   auto nccl = lowbit::comm::CreateNcclProcessGroup(mpi_group, local_rank, {}).value();
#pragma once

#include <memory>

#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

class NcclProcessGroup final : public ProcessGroup {
 public:
  // Prefer CreateNcclProcessGroup (comm/backends.h), which reports errors as a Status.
  NcclProcessGroup(std::shared_ptr<ProcessGroup> bootstrap, int device, ProcessGroupOptions options);
  ~NcclProcessGroup() override;

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Backend() const override { return "nccl"; }

  struct State;  // internal: communicator, stream, device

 protected:
  std::shared_ptr<Work> DoAllReduce(at::Tensor tensor, ReduceOp op) override;
  std::shared_ptr<Work> DoAllGather(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoAllGatherV(at::Tensor input) override;
  std::shared_ptr<Work> DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) override;
  std::shared_ptr<Work> DoAllToAll(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoBroadcast(at::Tensor tensor, int root) override;
  std::shared_ptr<Work> DoBarrier() override;
  bool AcceptsDevice(const at::Tensor& t) const override;

 private:
  std::shared_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace lowbit::comm
