// Detect(): which launcher started this process, and this rank's place in the job.
//
// Recognised, in this order: torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), OpenMPI's mpirun (OMPI_COMM_WORLD_*), Slurm's srun
// (SLURM_PROCID, SLURM_NTASKS, ...), PMI (PMI_RANK, PMI_SIZE), PMIx
// (PMIX_RANK), and otherwise a single process. Inconsistent values give an
// InvalidArgument error that names the variable and what was seen.
//
//   absl::StatusOr<lowbit::launch::LaunchInfo> info = lowbit::launch::Detect();
//   if (!info.ok()) { std::cerr << info.status() << "\n"; return 1; }
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "lowbit/launch/environment.h"

namespace lowbit::launch {

enum class Launcher { kSingleProcess, kTorchrun, kOpenMpi, kSlurm, kPmi, kPmix };
std::string ToString(Launcher launcher);

struct LaunchInfo {
  Launcher launcher = Launcher::kSingleProcess;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  // Rendezvous for Gloo / NCCL-over-TCPStore; empty when the launcher gave none.
  std::string master_addr;
  int master_port = 0;
  // torchrun's agent already serves the TCPStore at MASTER_ADDR:MASTER_PORT.
  bool agent_store = false;
  // torchrun's TORCHELASTIC_RESTART_COUNT: how often the agent restarted the
  // workers. A restarted job's keys go under a new prefix in the agent's
  // store, which still holds the failed attempt's.
  int restart_count = 0;
  // GLOO_SOCKET_IFNAME, when set.
  std::string gloo_interface;
  // LOWBIT_BACKEND (auto, mpi, gloo, nccl, local), when set.
  std::string backend;
  // LOWBIT_HOSTS (detect, one, many), when set: see comm::Hosts.
  std::string hosts;
  // LOWBIT_TIMEOUT_S, when set: the collective timeout.
  std::chrono::milliseconds timeout{0};
  // LOWBIT_KEEP_FREED_MEMORY (0 or 1, default 1): see launch::KeepFreedMemory.
  bool keep_freed_memory = true;
};

absl::StatusOr<LaunchInfo> Detect();
absl::StatusOr<LaunchInfo> Detect(const Environment& env);

}  // namespace lowbit::launch
