// lowbit on CUDA tensors against the same computation on CPU tensors: every
// comm hook of the registry on a bucket, DDP over the NCCL process group
// (world size 1, its bootstrap a LocalProcessGroup), and every 8-bit
// optimizer. Built against a CUDA LibTorch only; every test skips without a
// CUDA device (scripts/gpu_check.sh runs them on a lent GPU machine).
//
// The references: for the exact operations (allreduce, fp16, bf16, the 8-bit
// optimizers' fused steps, whose CUDA kernels are the CPU kernels' twins) the
// CPU result itself; for the compressing hooks, whose random draws come from
// the tensor's device generator, the compression error the CPU run makes on
// the same gradients: the CUDA run's must be of the same size.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/comm/backends.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/compress/registry.h"
#include "lowbit/optimizers/optim_8bit.h"

namespace lowbit {
namespace {

using comm::CommHook;
using comm::GradBucket;

bool HaveGpu() { return torch::cuda::is_available() && torch::cuda::device_count() > 0; }

#define LOWBIT_NEED_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device"

std::shared_ptr<comm::ProcessGroup> NcclWorldOfOne() {
  auto made = comm::CreateNcclProcessGroup(std::make_shared<comm::LocalProcessGroup>(), /*device=*/0, {});
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? *made : nullptr;
}

// Two matrices and a bias aliasing one flat buffer on `device`; large enough
// that top-k and PowerSGD compress them (top-k sends tensors under 8192
// elements dense).
struct DeviceBucket {
  GradBucket b;
  explicit DeviceBucket(torch::Device device) {
    b.buffer = torch::zeros({128 * 96 + 96 + 96 * 100}, torch::TensorOptions().device(device));
    b.parameter_names = {"w1", "bias", "w2"};
    b.offsets = {0, 128 * 96, 128 * 96 + 96};
    b.gradients = {b.buffer.narrow(0, 0, 128 * 96).view({128, 96}), b.buffer.narrow(0, 128 * 96, 96),
                   b.buffer.narrow(0, 128 * 96 + 96, 96 * 100).view({96, 100})};
    b.is_last = true;
  }
  at::Tensor Run(CommHook& hook, const at::Tensor& grad) {
    b.buffer.copy_(grad);
    auto work = hook.RunHook(b);
    work->Wait();
    return b.buffer.to(torch::kCPU).clone();
  }
};

double RelativeError(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(torch::kDouble) - want.to(torch::kDouble)).norm().item<double>() /
         std::max(1e-30, want.to(torch::kDouble).norm().item<double>());
}

// Hooks whose world-of-one result is the gradient itself, up to rounding.
bool Exact(const std::string& name) { return name == "allreduce" || name == "fp16" || name == "bf16"; }

TEST(CudaOps, EveryHookOnCudaTensorsMatchesItsCpuRun) {
  LOWBIT_NEED_GPU();
  auto nccl = NcclWorldOfOne();
  ASSERT_TRUE(nccl);
  auto local = std::make_shared<comm::LocalProcessGroup>();
  for (const compress::HookInfo& info : compress::HookRegistry()) {
    SCOPED_TRACE(info.name);
    std::shared_ptr<CommHook> cpu_hook = compress::MakeCommHook(local, info.name, compress::HookSettings{});
    std::shared_ptr<CommHook> gpu_hook = compress::MakeCommHook(nccl, info.name, compress::HookSettings{});
    DeviceBucket cpu(torch::kCPU), gpu(torch::Device(torch::kCUDA, 0));
    torch::manual_seed(3);
    double cpu_error = 0, gpu_error = 0;
    for (int step = 0; step < 8; ++step) {
      at::Tensor g = torch::randn_like(cpu.b.buffer);
      at::Tensor out_cpu = cpu.Run(*cpu_hook, g);
      at::Tensor out_gpu = gpu.Run(*gpu_hook, g.to(gpu.b.buffer.device()));
      ASSERT_TRUE(torch::isfinite(out_gpu).all().item<bool>()) << "step " << step;
      if (Exact(info.name)) {
        EXPECT_LT(RelativeError(out_gpu, out_cpu), 1e-6) << "step " << step;
      }
      cpu_error += RelativeError(out_cpu, g);
      gpu_error += RelativeError(out_gpu, g);
    }
    // The same method loses as much on either device (within 25%, and 1e-3 a step).
    EXPECT_LE(gpu_error, 1.25 * cpu_error + 8e-3) << "CPU mean error " << cpu_error / 8;
    EXPECT_GE(gpu_error, 0.75 * cpu_error - 8e-3) << "CPU mean error " << cpu_error / 8;
  }
}

struct Mlp : torch::nn::Module {
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(64, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 10));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::gelu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// Trains `steps` SGD steps of the model under DDP with `hook` (empty: the
// default allreduce) and returns what the steps changed in each parameter,
// on the CPU.
std::vector<at::Tensor> TrainUnderDdp(std::shared_ptr<comm::ProcessGroup> pg, torch::Device device,
                                      const std::string& hook, int steps) {
  torch::manual_seed(11);
  auto model = std::make_shared<Mlp>();
  model->to(device);
  std::vector<at::Tensor> before;
  for (const at::Tensor& p : model->parameters()) before.push_back(p.detach().to(torch::kCPU).clone());
  comm::DistributedDataParallel ddp(model, pg);
  if (!hook.empty()) ddp.RegisterCommHook(compress::MakeCommHook(pg, hook, compress::HookSettings{}));
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.05));
  for (int step = 0; step < steps; ++step) {
    torch::manual_seed(100 + step);
    at::Tensor x = torch::randn({32, 64}).to(device);
    at::Tensor y = torch::randint(0, 10, {32}, torch::kLong).to(device);
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    ddp.FinishGradientSync();
    sgd.step();
  }
  std::vector<at::Tensor> update;
  size_t i = 0;
  for (const at::Tensor& p : model->parameters()) update.push_back(p.detach().to(torch::kCPU) - before[i++]);
  return update;
}

TEST(CudaOps, DdpOverNcclTrainsAsDdpOnCpu) {
  LOWBIT_NEED_GPU();
  auto nccl = NcclWorldOfOne();
  ASSERT_TRUE(nccl);
  auto local = std::make_shared<comm::LocalProcessGroup>();
  const auto exact = TrainUnderDdp(local, torch::kCPU, "", 10);
  for (const std::string hook : {"", "fp16", "qsgd", "onebit", "powersgd"}) {
    SCOPED_TRACE(hook.empty() ? "allreduce" : hook);
    auto on_gpu = TrainUnderDdp(nccl, torch::Device(torch::kCUDA, 0), hook, 10);
    auto on_cpu = TrainUnderDdp(local, torch::kCPU, hook, 10);
    ASSERT_EQ(on_gpu.size(), exact.size());
    for (size_t i = 0; i < exact.size(); ++i) {
      if (hook.empty() || hook == "fp16") {
        // The devices' float rounding alone.
        EXPECT_LT(RelativeError(on_gpu[i], on_cpu[i]), 1e-3) << "parameter " << i;
      } else {
        // Random draws differ by device: the CUDA run must be as near the
        // uncompressed updates as the CPU run is.
        const double cpu_error = RelativeError(on_cpu[i], exact[i]);
        EXPECT_LE(RelativeError(on_gpu[i], exact[i]), 1.5 * cpu_error + 0.05)
            << "parameter " << i << ", CPU error " << cpu_error;
      }
    }
  }
}

TEST(CudaOps, NcclCollectivesOfOneRank) {
  LOWBIT_NEED_GPU();
  auto nccl = NcclWorldOfOne();
  ASSERT_TRUE(nccl);
  at::Tensor t = torch::arange(1000, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA));
  at::Tensor want = t.clone();
  nccl->AllReduce(t, comm::ReduceOp::kAvg)->Wait();
  EXPECT_TRUE(torch::equal(t, want));
  nccl->Broadcast(t, 0)->Wait();
  EXPECT_TRUE(torch::equal(t, want));
  at::Tensor gathered = torch::empty({1000}, t.options());
  nccl->AllGather(gathered, t)->Wait();
  EXPECT_TRUE(torch::equal(gathered, want));
  nccl->Barrier()->Wait();
}

// What six steps of the optimizer change in two parameters, on the CPU.
template <typename Optimizer, typename Options>
std::vector<at::Tensor> EightBitSteps(torch::Device device, Options options) {
  torch::manual_seed(5);
  std::vector<at::Tensor> params = {torch::randn({4096, 64}).to(device).requires_grad_(),
                                    torch::randn({300}).to(device).requires_grad_()};
  std::vector<at::Tensor> before;
  for (auto& p : params) before.push_back(p.detach().to(torch::kCPU).clone());
  Optimizer opt(params, options);
  for (int step = 0; step < 6; ++step) {
    torch::manual_seed(50 + step);
    for (auto& p : params) p.mutable_grad() = torch::randn(p.sizes()).to(device);
    opt.step();
  }
  std::vector<at::Tensor> update;
  for (size_t i = 0; i < params.size(); ++i) update.push_back(params[i].detach().to(torch::kCPU) - before[i]);
  return update;
}

template <typename Optimizer, typename Options>
void ExpectEightBitTwin(const char* name, Options options) {
  SCOPED_TRACE(name);
  auto gpu = EightBitSteps<Optimizer>(torch::Device(torch::kCUDA, 0), options);
  auto cpu = EightBitSteps<Optimizer>(torch::kCPU, options);
  // The fused steps are twins; a state element quantized to the neighbouring
  // code where the devices round differently moves its update a little.
  for (size_t i = 0; i < gpu.size(); ++i) EXPECT_LT(RelativeError(gpu[i], cpu[i]), 1e-3) << "parameter " << i;
}

TEST(CudaOps, EveryEightBitOptimizerStepsAsOnCpu) {
  LOWBIT_NEED_GPU();
  ExpectEightBitTwin<optim::Adam8bit>("Adam8bit", optim::Adam8bitOptions(1e-3));
  ExpectEightBitTwin<optim::AdamW8bit>("AdamW8bit", optim::AdamW8bitOptions(1e-3));
  ExpectEightBitTwin<optim::SGD8bit>("SGD8bit", optim::SGD8bitOptions(1e-2).momentum(0.9));
  ExpectEightBitTwin<optim::Lion8bit>("Lion8bit", optim::Lion8bitOptions(1e-4));
  ExpectEightBitTwin<optim::RMSprop8bit>("RMSprop8bit", optim::RMSprop8bitOptions(1e-3));
  ExpectEightBitTwin<optim::Adagrad8bit>("Adagrad8bit", optim::Adagrad8bitOptions(1e-2));
}

}  // namespace
}  // namespace lowbit
