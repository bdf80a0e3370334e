// Built instead of nccl_process_group.cpp when there is no CUDA LibTorch or nccl.h.
#include "lowbit/comm/backends.h"

namespace lowbit::comm {

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateNcclProcessGroup(std::shared_ptr<ProcessGroup>, int,
                                                                      ProcessGroupOptions) {
  return absl::FailedPreconditionError(
      "cannot create the NCCL process group because lowbit was not compiled with NCCL "
      "(needs nccl.h and a CUDA LibTorch at configure time)");
}

}  // namespace lowbit::comm
