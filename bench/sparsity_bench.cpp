// Sparse-training costs, measured in the same run on one thread:
//  - the mask kernels in GB/s of float32 weights against a memory copy and
//    against the same mask written with ATen ops (topk + scatter for N:M,
//    sort for the magnitude mask): ratio_vs_memcpy, speedup_vs_aten;
//  - the compressed N:M form: bytes against dense, and (de)compression speed;
//  - a training step's optimizer part for an MLP (3 x 2048 x 2048, 12.6M
//    weights, Adam): Sparsifier::Step with each method against a bare
//    optimizer.step(): ratio_vs_adam.
#include <cstdio>
#include <cstring>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/timing.h"
#include "lowbit/kernels/sparse.h"
#include "lowbit/launch/init.h"
#include "lowbit/sparsity/sparsifier.h"

ABSL_FLAG(int64_t, rows, 16384, "mask kernels: rows of the [rows, 1024] weight");
ABSL_FLAG(int, threads, 1, "intra-op threads");
ABSL_FLAG(int64_t, features, 2048, "step benchmark: width of the 3-layer MLP");

namespace {

using lowbit::bench::BestSeconds;
namespace k = lowbit::kernels;
namespace sp = lowbit::sparsity;

// The N:M mask with ATen ops: top-n magnitudes of each group, scattered.
at::Tensor AtenNmMask(const at::Tensor& w, int64_t n, int64_t m) {
  at::Tensor groups = w.abs().view({-1, m});
  at::Tensor idx = std::get<1>(groups.topk(n, 1));
  return at::zeros(groups.sizes(), w.options().dtype(at::kBool)).scatter_(1, idx, true).view(w.sizes());
}

at::Tensor AtenMagnitudeMask(const at::Tensor& w, double sparsity) {
  const int64_t kk = static_cast<int64_t>(sparsity * w.numel());
  at::Tensor order = std::get<1>(w.abs().view(-1).sort(/*stable=*/true, 0, false));
  at::Tensor mask = at::ones({w.numel()}, w.options().dtype(at::kBool));
  return mask.index_fill_(0, order.slice(0, 0, kk), false).view(w.sizes());
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads);
  torch::set_num_threads(threads);
  lowbit::launch::KeepFreedMemory();
  const int64_t rows = absl::GetFlag(FLAGS_rows);
  if (rows <= 0) {
    std::fprintf(stderr, "sparsity_bench: --rows must be positive, got %lld\n", static_cast<long long>(rows));
    return 2;
  }
  torch::manual_seed(1);
  at::Tensor w = torch::randn({rows, 1024});
  const int64_t n = w.numel();
  const double bytes = static_cast<double>(n) * 4;
  at::Tensor copy = torch::empty_like(w);
  const double t_copy = BestSeconds([&] { std::memcpy(copy.data_ptr<float>(), w.data_ptr<float>(), n * 4); });
  auto report = [&](const char* kernel, double t, double t_aten) {
    lowbit::bench::PrintKernelLine("sparsity_kernel", kernel, n, threads, t, t_copy, t_aten);
  };
  report("memcpy", t_copy, 0);
  report("nm_mask_2of4", BestSeconds([&] { k::NmMask(w, 2, 4); }), BestSeconds([&] { AtenNmMask(w, 2, 4); }));
  report("nm_mask_4of8", BestSeconds([&] { k::NmMask(w, 4, 8); }), BestSeconds([&] { AtenNmMask(w, 4, 8); }));
  report("magnitude_mask_90", BestSeconds([&] { k::MagnitudeMask(w, 0.9); }, 3),
         BestSeconds([&] { AtenMagnitudeMask(w, 0.9); }, 3));
  report("block_mask_4x4_50", BestSeconds([&] { k::BlockMagnitudeMask(w, 0.5, 4, 4); }, 3), 0);
  const at::Tensor mask = k::NmMask(w, 2, 4);
  const at::Tensor sparse = w * mask;
  k::NmCompressed packed = k::CompressNm(sparse, mask, 2, 4);
  report("nm_compress_2of4", BestSeconds([&] { k::CompressNm(sparse, mask, 2, 4); }), 0);
  report("nm_decompress_2of4", BestSeconds([&] { k::DecompressNm(packed.values, packed.index, 2, 4); }), 0);
  const double packed_bytes = static_cast<double>(packed.values.numel() * 4 + packed.index.numel());
  std::printf("{\"bench\":\"sparsity_export\",\"pattern\":\"2:4\",\"dense_bytes\":%.0f,\"compressed_bytes\":%.0f,"
              "\"ratio\":%.4g}\n",
              bytes, packed_bytes, packed_bytes / bytes);

  // The optimizer part of a step.
  const int64_t f = absl::GetFlag(FLAGS_features);
  auto make_model = [&] {
    torch::manual_seed(2);
    return torch::nn::Sequential(torch::nn::Linear(f, f), torch::nn::ReLU(), torch::nn::Linear(f, f),
                                 torch::nn::ReLU(), torch::nn::Linear(f, f));
  };
  auto time_steps = [&](torch::nn::Sequential& model, const std::function<void(torch::optim::Optimizer&)>& step) {
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-4));
    for (auto& p : model->parameters()) p.mutable_grad() = torch::randn_like(p) * 1e-3;
    return BestSeconds([&] { step(opt); }, 9);
  };
  torch::nn::Sequential dense_model = make_model();
  const double t_adam = time_steps(dense_model, [](torch::optim::Optimizer& o) { o.step(); });
  int64_t params = 0;
  for (const auto& p : dense_model->parameters()) params += p.numel();
  std::printf("{\"bench\":\"sparsity_step\",\"method\":\"adam\",\"params\":%lld,\"seconds\":%.6g,\"ratio_vs_adam\":1}\n",
              static_cast<long long>(params), t_adam);
  struct Case {
    const char* name;
    sp::SparseConfig config;
  };
  sp::SparseConfig hard, srste, pgf, srste48;
  hard.method = sp::Method::kHard;
  pgf.method = sp::Method::kPgf;
  pgf.end_step = 1000000;  // mid-schedule: beta > 0
  srste48.n = 4;
  srste48.m = 8;
  for (const Case& c : {Case{"hard_2of4", hard}, Case{"srste_2of4", srste}, Case{"srste_4of8", srste48},
                        Case{"pgf_2of4", pgf}, Case{"gmp_every_step", sp::GmpConfig(0.9, 0, 1000000, 1)}}) {
    torch::nn::Sequential model = make_model();
    sp::Sparsifier sparsifier(*model, c.config);
    const double t = time_steps(model, [&](torch::optim::Optimizer& o) { sparsifier.Step(o); });
    std::printf("{\"bench\":\"sparsity_step\",\"method\":\"%s\",\"params\":%lld,\"seconds\":%.6g,"
                "\"ratio_vs_adam\":%.4g}\n",
                c.name, static_cast<long long>(params), t, t / t_adam);
    std::fflush(stdout);
  }
  return 0;
}
