// Built instead of gloo_process_group.cpp when LibTorch's Gloo headers are missing.
#include "lowbit/comm/backends.h"

namespace lowbit::comm {

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateGlooProcessGroup(const GlooRendezvous&,
                                                                      ProcessGroupOptions) {
  return absl::FailedPreconditionError(
      "cannot create the Gloo process group because lowbit was not compiled with Gloo "
      "(needs LibTorch's c10d headers and libgloo-dev at configure time)");
}

}  // namespace lowbit::comm
