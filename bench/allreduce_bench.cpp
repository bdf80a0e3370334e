// Allreduce of 1K to 64M floats: raw MPI_Allreduce against lowbit's MPI and
// Gloo process groups, in the same run. Under mpirun rank 0 prints one JSON
// line per (size, implementation) with ratio_vs_mpi_raw = t / t(raw MPI).
// Under torchrun (no MPI in the process) only the Gloo group is measured, and
// it also does the harness's barriers; ratio_vs_mpi_raw is then absent.
#include <mpi.h>

#include <iostream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_util.h"
#include "lowbit/comm/backends.h"
#include "lowbit/launch/init.h"

ABSL_FLAG(int, min_log2, 10, "smallest size, log2 of floats");
ABSL_FLAG(int, max_log2, 26, "largest size, log2 of floats");
ABSL_FLAG(bool, gloo, true, "also measure the Gloo process group");

using lowbit::bench::MaxOverRanks;
using lowbit::bench::Median;
using lowbit::bench::Now;

namespace {

// Under torchrun: the Gloo group alone, timing itself.
int GlooOnly() {
  auto g = lowbit::launch::InitProcessGroup({.backend = lowbit::launch::Backend::kGloo});
  if (!g.ok()) {
    std::cerr << g.status() << "\n";
    return 1;
  }
  auto& pg = **g;
  for (int lg = absl::GetFlag(FLAGS_min_log2); lg <= absl::GetFlag(FLAGS_max_log2); lg += 2) {
    const int64_t n = int64_t{1} << lg;
    const int iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 24) / n, 3, 300));
    at::Tensor buffer = torch::ones({n});
    pg.AllReduce(buffer)->Wait();
    std::vector<double> times;
    for (int it = 0; it < iters; ++it) {
      pg.Barrier()->Wait();
      const double t0 = Now();
      pg.AllReduce(buffer)->Wait();
      at::Tensor t = torch::tensor({Now() - t0}, torch::kDouble);
      pg.AllReduce(t, lowbit::comm::ReduceOp::kMax)->Wait();
      times.push_back(t.item<double>());
    }
    if (pg.Rank() == 0) {
      const double t = Median(times);
      std::printf(
          "{\"bench\":\"allreduce\",\"impl\":\"lowbit_gloo_torchrun\",\"world_size\":%d,\"floats\":%lld,"
          "\"bytes\":%lld,\"iters\":%d,\"seconds\":%.6g,\"algbw_gbps\":%.4g}\n",
          pg.Size(), static_cast<long long>(n), static_cast<long long>(n * 4), iters, t, n * 4 / t / 1e9);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(1);
  auto info = lowbit::launch::Detect();
  if (info.ok() && info->launcher == lowbit::launch::Launcher::kTorchrun) return GlooOnly();
  auto mpi = lowbit::comm::CreateMpiProcessGroup({});
  if (!mpi.ok()) {
    std::cerr << mpi.status() << "\n";
    return 1;
  }
  std::shared_ptr<lowbit::comm::ProcessGroup> gloo;
  if (absl::GetFlag(FLAGS_gloo)) {
    auto g = lowbit::launch::InitProcessGroup({.backend = lowbit::launch::Backend::kGloo});
    if (!g.ok()) {
      std::cerr << g.status() << "\n";
      return 1;
    }
    gloo = *g;
  }
  const int rank = (*mpi)->Rank(), size = (*mpi)->Size();
  for (int lg = absl::GetFlag(FLAGS_min_log2); lg <= absl::GetFlag(FLAGS_max_log2); lg += 2) {
    const int64_t n = int64_t{1} << lg;
    const int iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 24) / n, 3, 300));
    at::Tensor buffer = torch::ones({n});
    struct Impl {
      const char* name;
      std::function<void()> run;
    };
    std::vector<Impl> impls = {
        {"mpi_raw",
         [&] { MPI_Allreduce(MPI_IN_PLACE, buffer.data_ptr(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }},
        {"lowbit_mpi", [&] { (*mpi)->AllReduce(buffer, lowbit::comm::ReduceOp::kSum)->Wait(); }},
    };
    if (gloo) impls.push_back({"lowbit_gloo", [&] { gloo->AllReduce(buffer, lowbit::comm::ReduceOp::kSum)->Wait(); }});
    std::vector<std::vector<double>> times(impls.size());
    for (auto& impl : impls) impl.run();  // warm-up: connections, buffers
    // Interleave the implementations so drift on a shared machine hits all alike.
    for (int it = 0; it < iters; ++it) {
      for (size_t k = 0; k < impls.size(); ++k) {
        (*mpi)->Barrier()->Wait();
        const double t0 = Now();
        impls[k].run();
        times[k].push_back(MaxOverRanks(Now() - t0));
      }
    }
    const double raw = Median(times[0]);
    if (rank == 0) {
      for (size_t k = 0; k < impls.size(); ++k) {
        const double t = Median(times[k]);
        std::printf(
            "{\"bench\":\"allreduce\",\"impl\":\"%s\",\"world_size\":%d,\"floats\":%lld,\"bytes\":%lld,"
            "\"iters\":%d,\"seconds\":%.6g,\"algbw_gbps\":%.4g,\"ratio_vs_mpi_raw\":%.4g}\n",
            impls[k].name, size, static_cast<long long>(n), static_cast<long long>(n * 4), iters, t,
            n * 4 / t / 1e9, t / raw);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
