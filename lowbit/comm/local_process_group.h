// LocalProcessGroup: a world of one process. Every collective is the identity
// (or a copy), so code written for N ranks runs unchanged in a single process.
//
//   auto pg = std::make_shared<lowbit::comm::LocalProcessGroup>();
#pragma once

#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

class LocalProcessGroup final : public ProcessGroup {
 public:
  explicit LocalProcessGroup(ProcessGroupOptions options = {}) : ProcessGroup(options) {}
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  std::string Backend() const override { return "local"; }

 protected:
  std::shared_ptr<Work> DoAllReduce(at::Tensor tensor, ReduceOp op) override;
  std::shared_ptr<Work> DoAllGather(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoAllGatherV(at::Tensor input) override;
  std::shared_ptr<Work> DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) override;
  std::shared_ptr<Work> DoAllToAll(at::Tensor output, at::Tensor input) override;
  std::shared_ptr<Work> DoBroadcast(at::Tensor tensor, int root) override;
  std::shared_ptr<Work> DoBarrier() override;
  bool AcceptsDevice(const at::Tensor&) const override { return true; }
};

}  // namespace lowbit::comm
