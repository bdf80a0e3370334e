// Factories for the process-group backends. A backend this build does not
// contain is refused with an error that says what it was built without; which
// file implements each factory is chosen by CMake (see comm/CMakeLists.txt).
//
// Most code calls lowbit::launch::InitProcessGroup() instead, which reads the
// launcher's environment and calls one of these.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

// MPI over MPI_COMM_WORLD. Initialises MPI (thread level SERIALIZED) unless the
// program already did, and finalises it when the group is destroyed.
absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateMpiProcessGroup(ProcessGroupOptions options);

// Where Gloo ranks meet: a c10d TCPStore at master_addr:master_port.
struct GlooRendezvous {
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  int rank = 0;
  int world_size = 1;
  // Rank 0 serves the store unless a launcher (torchrun's agent) already does.
  bool store_is_external = false;
  // Network interface for Gloo's sockets ("" picks the one MASTER_ADDR routes through).
  std::string interface_name;
  // Keys go under this prefix, so several groups can share one store.
  std::string key_prefix = "lowbit";
};
absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateGlooProcessGroup(const GlooRendezvous& rendezvous,
                                                                      ProcessGroupOptions options);

// NCCL on CUDA device `device`; its unique id travels through `bootstrap`
// (an MPI or Gloo group of the same ranks).
absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateNcclProcessGroup(
    std::shared_ptr<ProcessGroup> bootstrap, int device, ProcessGroupOptions options);

}  // namespace lowbit::comm
