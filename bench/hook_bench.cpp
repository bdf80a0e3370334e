// Time per gradient exchange of every comm hook on one bucket of --floats
// floats (matrices of 1000 x 1000 and a remainder), against a raw
// MPI_Allreduce of the same floats in the same run. Rank 0 prints one JSON
// line per hook: seconds (median over --iters, slowest rank), bytes this rank
// sent, and speedup_vs_mpi_allreduce = t(raw MPI) / t(hook). Run it on a
// simulated network with scripts/netsim (see scripts/bench.sh).
#include <mpi.h>

#include <iostream>
#include <sstream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench_util.h"
#include "lowbit/comm/backends.h"
#include "lowbit/compress/registry.h"
#include "lowbit/launch/init.h"

ABSL_FLAG(int64_t, floats, 25'000'000, "gradient floats per exchange");
ABSL_FLAG(int, iters, 5, "timed exchanges per hook");
ABSL_FLAG(std::string, network, "local", "label of the network in the output (scripts/bench.sh passes netsim's rate)");
ABSL_FLAG(std::string, hooks,
          "allreduce,fp16,bf16,qsgd8,qsgd4,qsgd4_twophase,ternary,ternary_twophase,onebit,onebit_twophase,topk,"
          "randomk,powersgd",
          "hooks to measure (qsgdN: N bits; NAME_twophase: the two-phase exchange; topk/randomk at 1%, powersgd "
          "rank 4)");

using lowbit::bench::MaxOverRanks;
using lowbit::bench::Median;
using lowbit::bench::Now;

namespace {

lowbit::comm::GradBucket MakeBucket(int64_t floats) {
  lowbit::comm::GradBucket b;
  b.buffer = torch::randn({floats});
  constexpr int64_t kSide = 1000;
  int64_t offset = 0;
  for (int i = 0; offset < floats; ++i) {
    const int64_t rows = std::min<int64_t>(kSide, (floats - offset) / kSide);
    at::Tensor g = rows > 0 ? b.buffer.narrow(0, offset, rows * kSide).view({rows, kSide})
                            : b.buffer.narrow(0, offset, floats - offset);
    b.parameter_names.push_back("layer" + std::to_string(i));
    b.offsets.push_back(offset);
    offset += g.numel();
    b.gradients.push_back(g);
  }
  return b;
}

// "qsgd4_twophase" -> qsgd with bits=4 and exchange=twophase; every hook
// starts compressing at step 0 (density and rank stay at their defaults;
// top-k without its warm-up).
std::shared_ptr<lowbit::comm::CommHook> HookFor(std::shared_ptr<lowbit::comm::ProcessGroup> pg, std::string name) {
  lowbit::compress::HookSettings settings;
  if (name != "allreduce") settings.emplace_back("start_iter", "0");  // the plain allreduce takes no settings
  const std::string suffix = "_twophase";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    name = name.substr(0, name.size() - suffix.size());
    settings.emplace_back("exchange", "twophase");
  }
  if (name.rfind("qsgd", 0) == 0) {
    settings.emplace_back("bits", name.substr(4));
    name = "qsgd";
  }
  if (name == "randomk") settings.emplace_back("density", "0.01");  // as top-k
  if (name == "topk") {  // the steady state: no density warm-up, every tensor this size compressed
    settings.emplace_back("warmup_steps", "0");
    settings.emplace_back("min_compress_numel", "1024");
  }
  return lowbit::compress::MakeCommHook(std::move(pg), name, settings);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(1);
  lowbit::launch::KeepFreedMemory();  // as InitProcessGroup does
  auto pg_or = lowbit::comm::CreateMpiProcessGroup({});
  if (!pg_or.ok()) {
    std::cerr << pg_or.status() << "\n";
    return 1;
  }
  std::shared_ptr<lowbit::comm::ProcessGroup> pg = *pg_or;
  const int64_t floats = absl::GetFlag(FLAGS_floats);
  const int iters = absl::GetFlag(FLAGS_iters);
  const bool lead = pg->Rank() == 0;
  const std::string network = absl::GetFlag(FLAGS_network);

  // The reference: raw MPI_Allreduce of the floats, through the same worker
  // thread as lowbit's would not be "raw", so from this thread directly.
  std::vector<float> raw(static_cast<size_t>(floats), 1.0f);
  std::vector<double> raw_times;
  for (int it = 0; it <= iters; ++it) {
    pg->Barrier()->Wait();
    const double t0 = Now();
    MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(floats), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const double t = MaxOverRanks(Now() - t0);
    if (it > 0) raw_times.push_back(t);
  }
  const double t_raw = Median(raw_times);
  if (lead) {
    std::printf("{\"bench\":\"hook\",\"hook\":\"mpi_allreduce_raw\",\"network\":\"%s\",\"world_size\":%d,"
                "\"floats\":%lld,\"seconds\":%.6g,\"bytes_sent\":%lld,\"speedup_vs_mpi_allreduce\":1}\n",
                network.c_str(), pg->Size(), static_cast<long long>(floats), t_raw,
                static_cast<long long>(floats * 4));
    std::fflush(stdout);
  }
  raw = {};
  // Where the allreduce hook's time goes: the process group's AllReduce
  // (its worker thread, no mean) against the raw call above.
  {
    at::Tensor t = torch::ones({floats});
    std::vector<double> times;
    for (int it = 0; it <= iters; ++it) {
      pg->Barrier()->Wait();
      const double t0 = Now();
      pg->AllReduce(t, lowbit::comm::ReduceOp::kSum)->Wait();
      const double dt = MaxOverRanks(Now() - t0);
      if (it > 0) times.push_back(dt);
    }
    if (lead) {
      std::printf("{\"bench\":\"hook\",\"hook\":\"pg_allreduce_sum\",\"network\":\"%s\",\"world_size\":%d,"
                  "\"floats\":%lld,\"seconds\":%.6g,\"speedup_vs_mpi_allreduce\":%.4g}\n",
                  network.c_str(), pg->Size(), static_cast<long long>(floats), Median(times), t_raw / Median(times));
      std::fflush(stdout);
    }
  }

  for (const std::string& name : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_hooks), ','))) {
    auto hook = HookFor(pg, name);
    lowbit::comm::GradBucket bucket = MakeBucket(floats);
    at::Tensor grad = bucket.buffer.clone();
    std::vector<double> times;
    int64_t sent = 0;
    for (int it = 0; it <= iters; ++it) {  // the first exchange warms up
      bucket.buffer.copy_(grad);
      pg->Barrier()->Wait();
      const int64_t before = pg->Traffic().bytes_sent;
      const double t0 = Now();
      hook->RunHook(bucket)->Wait();
      const double t = MaxOverRanks(Now() - t0);
      sent = pg->Traffic().bytes_sent - before;
      if (it > 0) times.push_back(t);
    }
    const double t = Median(times);
    if (lead) {
      std::printf("{\"bench\":\"hook\",\"hook\":\"%s\",\"config\":\"%s\",\"network\":\"%s\",\"world_size\":%d,"
                  "\"floats\":%lld,\"seconds\":%.6g,\"bytes_sent\":%lld,\"speedup_vs_mpi_allreduce\":%.4g}\n",
                  name.c_str(), hook->Config().c_str(), network.c_str(), pg->Size(), static_cast<long long>(floats),
                  t, static_cast<long long>(sent), t_raw / t);
      std::fflush(stdout);
    }
  }
  return 0;
}
