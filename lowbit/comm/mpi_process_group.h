// MpiProcessGroup: lowbit's collectives over MPI_COMM_WORLD, for CPU tensors.
//
// One worker thread owns every MPI call of the group (MPI is initialised at
// thread level SERIALIZED on it), so collectives run in the order they were
// issued while the caller goes on, e.g. with the rest of backward. Reductions
// of float16 / bfloat16 use MPI operators of lowbit's own.
//
//   auto pg = lowbit::comm::CreateMpiProcessGroup({}).value();   // under mpirun
#pragma once

#include <memory>

#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

class MpiProcessGroup final : public ProcessGroup {
 public:
  // Prefer CreateMpiProcessGroup (comm/backends.h), which reports errors as a Status.
  explicit MpiProcessGroup(ProcessGroupOptions options);
  ~MpiProcessGroup() override;

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Backend() const override { return "mpi"; }

  struct Worker;  // internal; shared with the worker thread
  struct Comm;    // internal: the communicator a group's collectives run on

 protected:
  std::shared_ptr<Work> DoAllReduce(at::Tensor tensor, ReduceOp op) override;
  std::shared_ptr<Work> DoAllGather(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoAllGatherV(at::Tensor input) override;
  std::shared_ptr<Work> DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) override;
  std::shared_ptr<Work> DoAllToAll(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoBroadcast(at::Tensor tensor, int root) override;
  std::shared_ptr<Work> DoBarrier() override;
  bool AcceptsDevice(const at::Tensor& t) const override { return t.device().is_cpu(); }
  HostGroups DoSplitByHost(int ranks_per_host) override;

 private:
  // A group over a communicator split from this one, on the same worker.
  MpiProcessGroup(ProcessGroupOptions options, std::shared_ptr<Worker> worker, std::shared_ptr<const Comm> comm);

  std::shared_ptr<Work> Enqueue(std::string description, std::vector<at::Tensor> result,
                                std::function<void()> run, std::function<void()> finisher = {});

  std::shared_ptr<Worker> worker_;
  std::shared_ptr<const Comm> comm_;
  bool owns_worker_ = true;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace lowbit::comm
