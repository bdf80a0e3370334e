// Built instead of mpi_process_group.cpp when CMake found no MPI.
#include "lowbit/comm/backends.h"

namespace lowbit::comm {

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateMpiProcessGroup(ProcessGroupOptions) {
  return absl::FailedPreconditionError(
      "cannot create the MPI process group because lowbit was not compiled with MPI "
      "(install libopenmpi-dev and reconfigure)");
}

}  // namespace lowbit::comm
