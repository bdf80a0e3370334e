// InitProcessGroup(): the process group for however this process was launched.
//
//   auto pg = lowbit::launch::InitProcessGroup();          // auto backend
//   if (!pg.ok()) { std::cerr << pg.status() << "\n"; return 1; }
//   std::shared_ptr<lowbit::comm::ProcessGroup> group = *pg;
//
// Backend kAuto picks: NCCL when this rank has a CUDA device and lowbit was
// built with NCCL; otherwise MPI under an MPI launcher (mpirun, srun, PMI);
// Gloo under torchrun; the local one-process group when nothing launched us.
// LOWBIT_BACKEND in the environment overrides kAuto, LOWBIT_TIMEOUT_S the
// collective timeout. Under an MPI launcher, Gloo's store address travels over
// MPI; NCCL's unique id travels over MPI or Gloo. NCCL also sets the CUDA
// device to the local rank.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lowbit/comm/process_group.h"
#include "lowbit/launch/detect.h"

namespace lowbit::launch {

enum class Backend { kAuto, kMpi, kGloo, kNccl, kLocal };
absl::StatusOr<Backend> ParseBackend(const std::string& name);
std::string ToString(Backend backend);

struct InitOptions {
  Backend backend = Backend::kAuto;
  // 0: LOWBIT_TIMEOUT_S when set, else 5 minutes.
  std::chrono::milliseconds timeout{0};
  // Calls KeepFreedMemory() (below) unless LOWBIT_KEEP_FREED_MEMORY=0.
  bool keep_freed_memory = true;
};

// Tells glibc's malloc to keep freed large blocks instead of returning them to
// the kernel (M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at 1 GiB). A training step
// allocates and frees the same gradient-sized buffers every step; returned
// memory comes back as fresh pages that fault in one by one, which measured
// 60-75% of a compression hook's time on a 25M-float gradient (see the
// README). The process's resident memory stays near its peak instead.
void KeepFreedMemory();

absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> InitProcessGroup(InitOptions options = {});
absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> InitProcessGroup(const LaunchInfo& info,
                                                                     InitOptions options);

}  // namespace lowbit::launch
