// DDP step overhead: one training step of an MLP (~8.4M parameters, 34 MB of
// gradients) with DistributedDataParallel and the default allreduce hook,
// against the same forward/backward followed by one raw MPI_Allreduce of the
// same gradient bytes (flattened, averaged, copied back). Same run, steps
// interleaved; rank 0 prints JSON lines with ratio = t(DDP) / t(raw).
// Then the cost of DDP's per-step parameter check (Note [Parameters added
// after DDP]: the module's trainable parameters, walked and sorted, compared
// with the bucketed ones) for this MLP and for a model of 50 blocks of
// Linear + LayerNorm (200 tensors), against the DDP step.
#include <mpi.h>

#include <algorithm>
#include <iostream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_util.h"
#include "lowbit/comm/backends.h"
#include "lowbit/comm/distributed_data_parallel.h"

ABSL_FLAG(int, steps, 20, "measured steps per variant");
ABSL_FLAG(int, batch, 32, "batch per rank");
ABSL_FLAG(int, threads, 1, "intra-op threads per rank");

using lowbit::bench::MaxOverRanks;
using lowbit::bench::Median;
using lowbit::bench::Now;

namespace {

torch::nn::Sequential MakeMlp() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(1024, 2048), torch::nn::ReLU(), torch::nn::Linear(2048, 2048),
                               torch::nn::ReLU(), torch::nn::Linear(2048, 1024), torch::nn::ReLU(),
                               torch::nn::Linear(1024, 10));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  auto pg_or = lowbit::comm::CreateMpiProcessGroup({});
  if (!pg_or.ok()) {
    std::cerr << pg_or.status() << "\n";
    return 1;
  }
  std::shared_ptr<lowbit::comm::ProcessGroup> pg = *pg_or;
  const int rank = pg->Rank(), size = pg->Size();

  torch::nn::Sequential ddp_model = MakeMlp();
  lowbit::comm::DistributedDataParallel ddp(ddp_model.ptr(), pg);
  torch::nn::Sequential raw_model = MakeMlp();
  std::vector<at::Tensor> raw_params = raw_model->parameters();
  int64_t numel = 0;
  for (const auto& p : raw_params) numel += p.numel();
  at::Tensor flat = torch::empty({numel});

  at::Tensor x = torch::randn({absl::GetFlag(FLAGS_batch), 1024});
  at::Tensor y = torch::randint(0, 10, {absl::GetFlag(FLAGS_batch)});
  auto step_ddp = [&] {
    for (auto& p : ddp_model->parameters()) p.mutable_grad().zero_();
    torch::nn::functional::cross_entropy(ddp_model->forward(x), y).backward();
  };
  auto step_raw = [&] {
    for (auto& p : raw_params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    torch::nn::functional::cross_entropy(raw_model->forward(x), y).backward();
    torch::NoGradGuard no_grad;
    int64_t off = 0;
    for (auto& p : raw_params) {
      flat.narrow(0, off, p.numel()).copy_(p.grad().reshape({-1}));
      off += p.numel();
    }
    MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), static_cast<int>(numel), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    flat.div_(size);
    off = 0;
    for (auto& p : raw_params) {
      p.mutable_grad().copy_(flat.narrow(0, off, p.numel()).view_as(p));
      off += p.numel();
    }
  };
  auto allreduce_only = [&] {
    MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), static_cast<int>(numel), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  };
  auto compute_only = [&] {
    for (auto& p : raw_params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    torch::nn::functional::cross_entropy(raw_model->forward(x), y).backward();
  };
  for (int i = 0; i < 3; ++i) {
    step_ddp();
    step_raw();
  }
  std::vector<double> t_ddp, t_raw, t_comm, t_compute, ddp_comm, ddp_wait;
  for (int i = 0; i < absl::GetFlag(FLAGS_steps); ++i) {
    pg->Barrier()->Wait();
    double t0 = Now();
    step_ddp();
    t_ddp.push_back(MaxOverRanks(Now() - t0));
    ddp_comm.push_back(ddp.LastStepStats().comm_seconds);
    ddp_wait.push_back(ddp.LastStepStats().wait_seconds);
    pg->Barrier()->Wait();
    t0 = Now();
    step_raw();
    t_raw.push_back(MaxOverRanks(Now() - t0));
    pg->Barrier()->Wait();
    t0 = Now();
    allreduce_only();
    t_comm.push_back(MaxOverRanks(Now() - t0));
    pg->Barrier()->Wait();
    t0 = Now();
    compute_only();
    t_compute.push_back(MaxOverRanks(Now() - t0));
  }
  if (rank == 0) {
    const double ddp_t = Median(t_ddp), raw_t = Median(t_raw);
    std::printf(
        "{\"bench\":\"ddp_step\",\"world_size\":%d,\"params\":%lld,\"grad_bytes\":%lld,\"buckets\":%d,"
        "\"ddp_step_s\":%.6g,\"raw_allreduce_step_s\":%.6g,\"ratio\":%.4g,\"compute_only_s\":%.6g,"
        "\"raw_allreduce_only_s\":%.6g,\"ddp_comm_s\":%.6g,\"ddp_wait_after_backward_s\":%.6g}\n",
        size, static_cast<long long>(numel), static_cast<long long>(numel * 4), ddp.LastStepStats().buckets, ddp_t,
        raw_t, ddp_t / raw_t, Median(t_compute), Median(t_comm), Median(ddp_comm), Median(ddp_wait));
  }
  // The parameter check's fast path, as DistributedDataParallel runs it once
  // per synchronised step.
  auto check_us = [](torch::nn::Module& m) {
    std::vector<const c10::TensorImpl*> keys;
    std::vector<double> t;
    for (int rep = 0; rep < 2000; ++rep) {
      const double t0 = Now();
      keys.clear();
      for (const at::Tensor& p : m.parameters(true)) {
        if (p.requires_grad()) keys.push_back(p.unsafeGetTensorImpl());
      }
      std::sort(keys.begin(), keys.end());
      t.push_back(Now() - t0);
    }
    return std::make_pair(keys.size(), Median(t) * 1e6);
  };
  torch::nn::Sequential deep;
  for (int b = 0; b < 50; ++b) {
    deep->push_back(torch::nn::Linear(64, 64));
    deep->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({64})));
  }
  if (rank == 0) {
    for (auto [name, module] : {std::make_pair("mlp", static_cast<torch::nn::Module*>(ddp_model.ptr().get())),
                                std::make_pair("deep", static_cast<torch::nn::Module*>(deep.ptr().get()))}) {
      const auto [tensors, us] = check_us(*module);
      std::printf("{\"bench\":\"ddp_parameter_check\",\"model\":\"%s\",\"tensors\":%zu,\"check_us\":%.3g,"
                  "\"fraction_of_mlp_ddp_step\":%.3g}\n",
                  name, tensors, us, us * 1e-6 / Median(t_ddp));
    }
  }
  return 0;
}
