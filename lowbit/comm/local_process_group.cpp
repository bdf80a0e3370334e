#include "lowbit/comm/local_process_group.h"

#include <ATen/ATen.h>

namespace lowbit::comm {

std::shared_ptr<Work> LocalProcessGroup::DoAllReduce(at::Tensor tensor, ReduceOp) {
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{tensor});
}

std::shared_ptr<Work> LocalProcessGroup::DoAllGather(at::Tensor output, at::Tensor input) {
  output.copy_(input);
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{output});
}

std::shared_ptr<Work> LocalProcessGroup::DoAllGatherV(at::Tensor input) {
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{input.reshape({-1}).clone()});
}

std::shared_ptr<Work> LocalProcessGroup::DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp) {
  output.copy_(input.reshape(output.sizes()));
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{output});
}

std::shared_ptr<Work> LocalProcessGroup::DoAllToAll(at::Tensor output, at::Tensor input) {
  output.copy_(input.reshape(output.sizes()));
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{output});
}

std::shared_ptr<Work> LocalProcessGroup::DoBroadcast(at::Tensor tensor, int) {
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{tensor});
}

std::shared_ptr<Work> LocalProcessGroup::DoBarrier() {
  return std::make_shared<CompletedWork>(std::vector<at::Tensor>{});
}

}  // namespace lowbit::comm
