// lowbit quickstart: the lines a LibTorch training loop adds to train
// data-parallel with compressed gradients, 8-bit optimizer state and,
// optionally, quantization-aware training, resumable from checkpoints.
// Copy it, swap in your model and data.
//
//   mpirun -np 2 build/examples/quickstart/quickstart [--qat] [--checkpoint DIR]
//   python3 -m torch.distributed.run --nproc_per_node 2 --no_python build/examples/quickstart/quickstart
//   build/examples/quickstart/quickstart                  # one process
#include <iostream>
#include <optional>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "examples/common/idx_reader.h"  // your data instead
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/optim_8bit.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/train/checkpoint.h"

ABSL_FLAG(int, epochs, 3, "training epochs");
ABSL_FLAG(bool, qat, false, "quantization-aware training: 4-bit weights, 8-bit activations (w4a8)");
ABSL_FLAG(std::string, checkpoint, "", "directory to save to after every epoch and resume from if it holds one");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist", "Fashion-MNIST's gzipped IDX files");

namespace nn = torch::nn;

// An ordinary LibTorch model. lowbit::qat::Conv2d and Linear are torch's
// layers until Prepare quantizes them; the Sequential's torch::nn::Linear
// layers are replaced by Prepare, so they need nothing.
struct NetImpl : nn::Module {
  NetImpl() {
    conv1 = register_module("conv1", lowbit::qat::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)));
    conv2 = register_module("conv2", lowbit::qat::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)));
    head = register_module("head", nn::Sequential(nn::Flatten(), nn::Linear(32 * 7 * 7, 128), nn::ReLU(),
                                                  nn::Linear(128, 10)));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    return head->forward(x);
  }
  lowbit::qat::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Sequential head{nullptr};
};
TORCH_MODULE(Net);

int Train() {
  // 1. The process group, from mpirun's, torchrun's or srun's environment.
  auto pg_or = lowbit::launch::InitProcessGroup();
  if (!pg_or.ok()) {
    std::cerr << "error: " << pg_or.status().message() << "\n";
    return 1;
  }
  std::shared_ptr<lowbit::comm::ProcessGroup> pg = *pg_or;
  const int rank = pg->Rank(), world = pg->Size();
  torch::set_num_threads(1);
  auto data = lowbit::examples::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir));
  if (!data.ok()) {
    std::cerr << "error: " << data.status().message() << "\n";
    return 1;
  }

  // 2. The model. Same seed everywhere (DDP also broadcasts rank 0's weights).
  torch::manual_seed(1);
  Net model;
  // 3. Optional QAT: before DDP and the optimizer, whose parameters it adds
  //    to; the calibration batch must be the same on every rank.
  if (absl::GetFlag(FLAGS_qat)) {
    lowbit::qat::Prepare(*model, lowbit::qat::PresetConfig("w4a8"));
    lowbit::qat::Calibrate(*model, [&] { model->forward(data->train.images.narrow(0, 0, 256)); });
  }
  // 4. Data parallel, with 4-bit gradients and error feedback.
  lowbit::comm::DistributedDataParallel ddp(model.ptr(), pg);
  ddp.RegisterCommHook(lowbit::compress::MakeCommHook(pg, "qsgd"));
  // 5. Adam with 8-bit state (2 bytes per parameter instead of 8).
  lowbit::optim::Adam8bit opt(model->parameters(), lowbit::optim::Adam8bitOptions(1e-3));
  // 6. Checkpoints: model, optimizer, hook state, epoch and RNG, per rank.
  int64_t epochs_done = 0;
  std::optional<lowbit::train::Checkpoint> ckpt;
  if (!absl::GetFlag(FLAGS_checkpoint).empty()) {
    ckpt.emplace(absl::GetFlag(FLAGS_checkpoint), pg);
    ckpt->Model(*model).Optimizer("adam8bit", opt).Ddp(ddp).Counter("epochs_done", &epochs_done);
    if (ckpt->Found()) ckpt->Restore();
  }

  const int64_t batch = 64, n = data->train.images.size(0), steps = n / (batch * world);
  for (int64_t epoch = epochs_done; epoch < absl::GetFlag(FLAGS_epochs); ++epoch) {
    model->train();
    at::Tensor order = torch::randperm(n, at::detail::createCPUGenerator(1000 + epoch));
    double loss_sum = 0;
    for (int64_t step = 0; step < steps; ++step) {
      at::Tensor idx = order.narrow(0, (step * world + rank) * batch, batch);  // this rank's shard
      opt.zero_grad();
      at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(data->train.images.index_select(0, idx)),
                                                             data->train.labels.index_select(0, idx));
      loss.backward();  // buckets are compressed and exchanged while backward runs
      opt.step();
      loss_sum += loss.item<double>();
    }
    // Test accuracy: each rank scores a shard, then one allreduce.
    torch::NoGradGuard no_grad;
    model->eval();
    const int64_t t = data->test.images.size(0), begin = t * rank / world, end = t * (rank + 1) / world;
    at::Tensor pred = model->forward(data->test.images.slice(0, begin, end)).argmax(1);
    at::Tensor stats = torch::tensor({pred.eq(data->test.labels.slice(0, begin, end)).sum().item<double>(),
                                      loss_sum / static_cast<double>(steps)}, torch::kDouble);
    pg->AllReduce(stats)->Wait();
    if (rank == 0) {
      std::cout << "epoch " << epoch + 1 << "  loss " << stats[1].item<double>() / world << "  test_accuracy "
                << stats[0].item<double>() / t << "  MB sent/rank " << pg->Traffic().bytes_sent / 1e6 << std::endl;
    }
    epochs_done = epoch + 1;
    if (ckpt) ckpt->Save();
  }
  return 0;
}

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  try {
    return Train();
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  }
}
