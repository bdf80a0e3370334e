#include "lowbit/launch/detect.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lowbit::launch {

std::string ToString(Launcher launcher) {
  switch (launcher) {
    case Launcher::kSingleProcess: return "single process";
    case Launcher::kTorchrun: return "torchrun";
    case Launcher::kOpenMpi: return "OpenMPI";
    case Launcher::kSlurm: return "Slurm";
    case Launcher::kPmi: return "PMI";
    case Launcher::kPmix: return "PMIx";
  }
  return "unknown";
}

namespace {

// Reads an integer variable that the launcher must have set.
absl::Status Require(const Environment& env, const std::string& name, const std::string& launcher, int* out) {
  absl::StatusOr<std::optional<int>> value = GetInt(env, name);
  if (!value.ok()) return value.status();
  if (!value->has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(launcher, " launch detected but ", name, " is not set"));
  }
  *out = **value;
  return absl::OkStatus();
}

// Reads an optional integer variable, keeping `*out` when it is unset.
absl::Status Optional(const Environment& env, const std::string& name, int* out) {
  absl::StatusOr<std::optional<int>> value = GetInt(env, name);
  if (!value.ok()) return value.status();
  if (value->has_value()) *out = **value;
  return absl::OkStatus();
}

#define LOWBIT_RETURN_IF_ERROR(expr)        \
  do {                                      \
    const absl::Status lowbit_status_ = (expr); \
    if (!lowbit_status_.ok()) return lowbit_status_; \
  } while (0)

// Slurm writes tasks per node as "2(x3),1": the count on this node's group.
int FirstTaskCount(const std::string& text) {
  int value = 1;
  const size_t end = text.find_first_not_of("0123456789");
  if (!absl::SimpleAtoi(text.substr(0, end), &value)) return 1;
  return value;
}

absl::Status Validate(const LaunchInfo& info, const std::string& rank_var, const std::string& size_var,
                      const std::string& local_var) {
  if (info.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToString(info.launcher), ": ", size_var, " must be >= 1, got ", info.world_size));
  }
  if (info.rank < 0 || info.rank >= info.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(info.launcher), ": ", rank_var, "=", info.rank,
                                                   " is outside [0, ", size_var, "=", info.world_size, ")"));
  }
  if (info.local_size < 1 || info.local_rank < 0 || info.local_rank >= info.local_size) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(info.launcher), ": ", local_var, "=", info.local_rank,
                                                   " is outside [0, local size ", info.local_size, ")"));
  }
  return absl::OkStatus();
}

absl::Status ReadCommon(const Environment& env, LaunchInfo& info) {
  info.gloo_interface = GetString(env, "GLOO_SOCKET_IFNAME").value_or("");
  info.backend = GetString(env, "LOWBIT_BACKEND").value_or("");
  info.hosts = GetString(env, "LOWBIT_HOSTS").value_or("");
  absl::StatusOr<std::optional<double>> timeout = GetDouble(env, "LOWBIT_TIMEOUT_S");
  if (!timeout.ok()) return timeout.status();
  if (timeout->has_value()) {
    if (**timeout <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("LOWBIT_TIMEOUT_S must be > 0, got ", **timeout));
    }
    info.timeout = std::chrono::milliseconds(static_cast<int64_t>(**timeout * 1000));
  }
  absl::StatusOr<std::optional<int>> keep = GetInt(env, "LOWBIT_KEEP_FREED_MEMORY");
  if (!keep.ok()) return keep.status();
  if (keep->has_value()) {
    if (**keep != 0 && **keep != 1) {
      return absl::InvalidArgumentError(absl::StrCat("LOWBIT_KEEP_FREED_MEMORY must be 0 or 1, got ", **keep));
    }
    info.keep_freed_memory = **keep == 1;
  }
  // MASTER_ADDR / MASTER_PORT also serve Gloo jobs started by other launchers.
  if (info.master_addr.empty()) info.master_addr = GetString(env, "MASTER_ADDR").value_or("");
  if (info.master_port == 0) LOWBIT_RETURN_IF_ERROR(Optional(env, "MASTER_PORT", &info.master_port));
  if (info.master_port < 0 || info.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT must be in [1, 65535], got ", info.master_port));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LaunchInfo> Detect() { return Detect(ProcessEnvironment()); }

absl::StatusOr<LaunchInfo> Detect(const Environment& env) {
  LaunchInfo info;
  if (env.Get("TORCHELASTIC_RUN_ID") || (env.Get("RANK") && env.Get("WORLD_SIZE"))) {
    info.launcher = Launcher::kTorchrun;
    LOWBIT_RETURN_IF_ERROR(Require(env, "RANK", "torchrun", &info.rank));
    LOWBIT_RETURN_IF_ERROR(Require(env, "WORLD_SIZE", "torchrun", &info.world_size));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "LOCAL_RANK", &info.local_rank));
    info.local_size = info.world_size;
    LOWBIT_RETURN_IF_ERROR(Optional(env, "LOCAL_WORLD_SIZE", &info.local_size));
    info.master_addr = GetString(env, "MASTER_ADDR").value_or("");
    if (info.master_addr.empty()) {
      return absl::InvalidArgumentError(
          "torchrun launch detected (RANK and WORLD_SIZE are set) but MASTER_ADDR is not set");
    }
    LOWBIT_RETURN_IF_ERROR(Require(env, "MASTER_PORT", "torchrun", &info.master_port));
    if (info.master_port < 1 || info.master_port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT must be in [1, 65535], got ", info.master_port));
    }
    info.agent_store = GetString(env, "TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    LOWBIT_RETURN_IF_ERROR(Optional(env, "TORCHELASTIC_RESTART_COUNT", &info.restart_count));
    if (info.restart_count < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("TORCHELASTIC_RESTART_COUNT must be >= 0, got ", info.restart_count));
    }
    LOWBIT_RETURN_IF_ERROR(Validate(info, "RANK", "WORLD_SIZE", "LOCAL_RANK"));
  } else if (env.Get("OMPI_COMM_WORLD_RANK")) {
    info.launcher = Launcher::kOpenMpi;
    LOWBIT_RETURN_IF_ERROR(Require(env, "OMPI_COMM_WORLD_RANK", "OpenMPI", &info.rank));
    LOWBIT_RETURN_IF_ERROR(Require(env, "OMPI_COMM_WORLD_SIZE", "OpenMPI", &info.world_size));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "OMPI_COMM_WORLD_LOCAL_RANK", &info.local_rank));
    info.local_size = info.world_size;
    LOWBIT_RETURN_IF_ERROR(Optional(env, "OMPI_COMM_WORLD_LOCAL_SIZE", &info.local_size));
    LOWBIT_RETURN_IF_ERROR(Validate(info, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"));
  } else if (env.Get("SLURM_PROCID") && env.Get("SLURM_NTASKS")) {
    info.launcher = Launcher::kSlurm;
    LOWBIT_RETURN_IF_ERROR(Require(env, "SLURM_PROCID", "Slurm", &info.rank));
    LOWBIT_RETURN_IF_ERROR(Require(env, "SLURM_NTASKS", "Slurm", &info.world_size));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "SLURM_LOCALID", &info.local_rank));
    info.local_size = FirstTaskCount(GetString(env, "SLURM_STEP_TASKS_PER_NODE")
                                         .value_or(GetString(env, "SLURM_TASKS_PER_NODE").value_or("1")));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "SLURM_NTASKS_PER_NODE", &info.local_size));
    LOWBIT_RETURN_IF_ERROR(Validate(info, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"));
  } else if (env.Get("PMI_RANK")) {
    info.launcher = Launcher::kPmi;
    LOWBIT_RETURN_IF_ERROR(Require(env, "PMI_RANK", "PMI", &info.rank));
    LOWBIT_RETURN_IF_ERROR(Require(env, "PMI_SIZE", "PMI", &info.world_size));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "MPI_LOCALRANKID", &info.local_rank));
    info.local_size = info.world_size;
    LOWBIT_RETURN_IF_ERROR(Optional(env, "MPI_LOCALNRANKS", &info.local_size));
    LOWBIT_RETURN_IF_ERROR(Validate(info, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"));
  } else if (env.Get("PMIX_RANK")) {
    info.launcher = Launcher::kPmix;
    LOWBIT_RETURN_IF_ERROR(Require(env, "PMIX_RANK", "PMIx", &info.rank));
    // PMIx itself puts no size in the environment; its launchers (prterun,
    // srun --mpi=pmix) set one of these.
    int size = 0;
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PRTE_NUM_PROCS", "SLURM_NTASKS"}) {
      LOWBIT_RETURN_IF_ERROR(Optional(env, name, &size));
      if (size > 0) break;
    }
    if (size == 0) {
      return absl::InvalidArgumentError(
          "PMIx launch detected (PMIX_RANK is set) but no world size was found in OMPI_COMM_WORLD_SIZE, "
          "PRTE_NUM_PROCS or SLURM_NTASKS");
    }
    info.world_size = size;
    info.local_size = size;
    LOWBIT_RETURN_IF_ERROR(Optional(env, "OMPI_COMM_WORLD_LOCAL_RANK", &info.local_rank));
    LOWBIT_RETURN_IF_ERROR(Optional(env, "OMPI_COMM_WORLD_LOCAL_SIZE", &info.local_size));
    LOWBIT_RETURN_IF_ERROR(Validate(info, "PMIX_RANK", "world size", "local rank"));
  }
  LOWBIT_RETURN_IF_ERROR(ReadCommon(env, info));
  return info;
}

}  // namespace lowbit::launch
