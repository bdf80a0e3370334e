#include "lowbit/launch/init.h"

#include <malloc.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "lowbit/comm/backends.h"
#include "lowbit/config.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/launch/internal/cuda_device.h"

namespace lowbit::launch {

absl::StatusOr<Backend> ParseBackend(const std::string& name) {
  if (name == "auto" || name.empty()) return Backend::kAuto;
  if (name == "mpi") return Backend::kMpi;
  if (name == "gloo") return Backend::kGloo;
  if (name == "nccl") return Backend::kNccl;
  if (name == "local") return Backend::kLocal;
  return absl::InvalidArgumentError(
      absl::StrCat("backend must be one of auto, mpi, gloo, nccl, local; got '", name, "'"));
}

std::string ToString(Backend backend) {
  switch (backend) {
    case Backend::kAuto: return "auto";
    case Backend::kMpi: return "mpi";
    case Backend::kGloo: return "gloo";
    case Backend::kNccl: return "nccl";
    case Backend::kLocal: return "local";
  }
  return "unknown";
}

namespace {

using PgOr = absl::StatusOr<std::shared_ptr<comm::ProcessGroup>>;

bool IsMpiLauncher(Launcher l) {
  return l == Launcher::kOpenMpi || l == Launcher::kSlurm || l == Launcher::kPmi || l == Launcher::kPmix;
}

// A port the OS reports free right now, for a store that rank 0 serves.
absl::StatusOr<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError("socket() failed while looking for a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) return absl::UnavailableError("bind() to an ephemeral port failed");
  return static_cast<int>(ntohs(addr.sin_port));
}

PgOr InitGloo(const LaunchInfo& info, comm::ProcessGroupOptions options) {
  comm::GlooRendezvous r;
  r.rank = info.rank;
  r.world_size = info.world_size;
  r.interface_name = info.gloo_interface;
  r.master_addr = info.master_addr.empty() ? "127.0.0.1" : info.master_addr;
  r.master_port = info.master_port;
  r.store_is_external = info.agent_store;
  // As torch.distributed does under torchrun: each attempt its own keys, so a
  // restarted job never meets the dead attempt's addresses in the agent's store.
  r.key_prefix = absl::StrCat("lowbit/attempt_", info.restart_count);
  if (r.master_port == 0) {
    if (info.world_size == 1) {
      absl::StatusOr<int> port = FreePort();
      if (!port.ok()) return port.status();
      r.master_port = *port;
    } else if (IsMpiLauncher(info.launcher)) {
      // No address was given: rank 0 picks a port and tells the others over MPI.
      PgOr mpi = comm::CreateMpiProcessGroup(options);
      if (!mpi.ok()) return mpi.status();
      at::Tensor port = at::zeros({1}, at::kInt);
      if (info.rank == 0) {
        absl::StatusOr<int> free = FreePort();
        if (!free.ok()) return free.status();
        port.fill_(*free);
      }
      (*mpi)->Broadcast(port, 0)->Wait();
      r.master_port = port.item<int>();
      if (info.master_addr.empty() && info.local_size != info.world_size) {
        return absl::InvalidArgumentError(
            "Gloo across several nodes under an MPI launcher needs MASTER_ADDR (rank 0's address)");
      }
    } else {
      return absl::InvalidArgumentError("the Gloo backend needs MASTER_PORT (and MASTER_ADDR) to meet");
    }
  }
  return comm::CreateGlooProcessGroup(r, options);
}

}  // namespace

absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> InitProcessGroup(InitOptions options) {
  absl::StatusOr<LaunchInfo> info = Detect();
  if (!info.ok()) return info.status();
  return InitProcessGroup(*info, options);
}

void KeepFreedMemory() {
  constexpr int kOneGiB = 1 << 30;
  mallopt(M_MMAP_THRESHOLD, kOneGiB);
  mallopt(M_TRIM_THRESHOLD, kOneGiB);
}

absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> InitProcessGroup(const LaunchInfo& info,
                                                                     InitOptions options) {
  if (options.keep_freed_memory && info.keep_freed_memory) KeepFreedMemory();
  Backend backend = options.backend;
  if (backend == Backend::kAuto && !info.backend.empty()) {
    absl::StatusOr<Backend> parsed = ParseBackend(info.backend);
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("LOWBIT_BACKEND: ", parsed.status().message()));
    backend = *parsed;
  }
  comm::ProcessGroupOptions pg_options;
  if (!info.hosts.empty()) {
    absl::StatusOr<comm::Hosts> hosts = comm::ParseHosts(info.hosts);
    if (!hosts.ok()) return absl::InvalidArgumentError(absl::StrCat("LOWBIT_HOSTS: ", hosts.status().message()));
    pg_options.hosts = *hosts;
  }
  if (options.timeout.count() > 0) {
    pg_options.timeout = options.timeout;
  } else if (info.timeout.count() > 0) {
    pg_options.timeout = info.timeout;
  }
  const bool has_cuda = internal::CudaDeviceCount() > 0;
  if (backend == Backend::kAuto) {
    if (info.launcher == Launcher::kSingleProcess && info.world_size == 1) {
      backend = Backend::kLocal;
    } else if (has_cuda && LOWBIT_WITH_NCCL) {
      backend = Backend::kNccl;
    } else if (info.launcher == Launcher::kTorchrun) {
      backend = Backend::kGloo;
    } else {
      backend = Backend::kMpi;
    }
  }
  switch (backend) {
    case Backend::kLocal:
      if (info.world_size != 1) {
        return absl::InvalidArgumentError(absl::StrCat("the local backend runs one process, but the ",
                                                       ToString(info.launcher), " launcher started ",
                                                       info.world_size));
      }
      return std::shared_ptr<comm::ProcessGroup>(std::make_shared<comm::LocalProcessGroup>(pg_options));
    case Backend::kMpi:
      return comm::CreateMpiProcessGroup(pg_options);
    case Backend::kGloo:
      return InitGloo(info, pg_options);
    case Backend::kNccl: {
      if (!has_cuda) return absl::FailedPreconditionError("the NCCL backend needs a CUDA device; none is visible");
      internal::SetCudaDevice(info.local_rank % internal::CudaDeviceCount());
      PgOr bootstrap = info.launcher == Launcher::kTorchrun || !IsMpiLauncher(info.launcher)
                           ? InitGloo(info, pg_options)
                           : comm::CreateMpiProcessGroup(pg_options);
      if (!bootstrap.ok()) return bootstrap.status();
      return comm::CreateNcclProcessGroup(*bootstrap, info.local_rank % internal::CudaDeviceCount(), pg_options);
    }
    case Backend::kAuto:
      break;
  }
  return absl::InternalError("unreachable backend choice");
}

}  // namespace lowbit::launch
