// GlooProcessGroup: lowbit's collectives over LibTorch's own Gloo backend
// (c10d::ProcessGroupGloo), for CPU tensors. It is what torchrun jobs use on
// CPU, where no MPI launcher exists; ranks meet through a c10d TCPStore.
//
//   lowbit::comm::GlooRendezvous where{.master_addr = "127.0.0.1", .master_port = 29500,
//                                      .rank = rank, .world_size = 4};
//   auto pg = lowbit::comm::CreateGlooProcessGroup(where, {}).value();
//
// Gloo has no reduce-scatter: lowbit's runs as an all-to-all followed by a local
// reduction, which moves the same bytes. bfloat16 is reduced in float32.
#pragma once

#include <memory>

#include "lowbit/comm/backends.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

class GlooProcessGroup final : public ProcessGroup {
 public:
  // Prefer CreateGlooProcessGroup (comm/backends.h), which reports errors as a Status.
  GlooProcessGroup(const GlooRendezvous& rendezvous, ProcessGroupOptions options);
  ~GlooProcessGroup() override;

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Backend() const override { return "gloo"; }

  struct State;  // internal: the c10d store and process group

 protected:
  std::shared_ptr<Work> DoAllReduce(at::Tensor tensor, ReduceOp op) override;
  std::shared_ptr<Work> DoAllGather(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoAllGatherV(at::Tensor input) override;
  std::shared_ptr<Work> DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) override;
  std::shared_ptr<Work> DoAllToAll(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoBroadcast(at::Tensor tensor, int root) override;
  std::shared_ptr<Work> DoBarrier() override;
  bool AcceptsDevice(const at::Tensor& t) const override { return t.device().is_cpu(); }

 private:
  std::unique_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace lowbit::comm
