// A user's program built against an installed lowbit only: a model written
// the ordinary LibTorch way, DDP with a compression hook, an 8-bit optimizer,
// QAT, a Sparsifier, and a checkpoint. It trains 8 steps straight, and 4
// steps, a save, fresh objects, a restore and 4 more steps; both must end
// with the same parameters, bit for bit. Then the mistakes that once passed
// without a word must each throw, with a message free of backtraces: QAT
// prepared after DDP, and a second comm hook. Run under mpirun -np 2 (or
// alone).
//
//   consumer CHECKPOINT_DIR
#include <iostream>
#include <memory>

#include <torch/torch.h>

#include <lowbit/comm/distributed_data_parallel.h>
#include <lowbit/compress/registry.h>
#include <lowbit/config.h>
#include <lowbit/launch/init.h>
#include <lowbit/optimizers/optim_8bit.h>
#include <lowbit/qat/prepare.h>
#include <lowbit/sparsity/sparsifier.h>
#include <lowbit/train/checkpoint.h>

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", lowbit::qat::Linear(16, 32));
    head = register_module("head", torch::nn::Sequential(torch::nn::ReLU(), torch::nn::Linear(32, 4)));
  }
  at::Tensor forward(at::Tensor x) { return head->forward(fc1(x)); }
  lowbit::qat::Linear fc1{nullptr};
  torch::nn::Sequential head{nullptr};
};
TORCH_MODULE(Net);

struct Training {
  Training(std::shared_ptr<lowbit::comm::ProcessGroup> pg, uint64_t seed) {
    torch::manual_seed(seed);
    net = Net();
    lowbit::qat::Prepare(*net, lowbit::qat::PresetConfig("w4a8"));
    lowbit::qat::Calibrate(*net, [&] { net->forward(torch::ones({8, 16})); });
    sparsifier = std::make_unique<lowbit::sparsity::Sparsifier>(*net, lowbit::sparsity::SparseConfig{});
    ddp = std::make_unique<lowbit::comm::DistributedDataParallel>(net.ptr(), pg);
    ddp->RegisterCommHook(lowbit::compress::MakeCommHook(pg, "qsgd", {{"min_compress_numel", "64"}}));
    opt = std::make_unique<lowbit::optim::Adam8bit>(net->parameters(),
                                                    lowbit::optim::Adam8bitOptions(1e-2).min_8bit_size(256));
    rank = pg->Rank();
  }
  void Step() {
    auto gen = at::detail::createCPUGenerator(100 * step + rank);
    at::Tensor x = torch::randn({8, 16}, gen), y = torch::randint(0, 4, {8}, gen);
    opt->zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    sparsifier->Step(*opt);
    ++step;
  }
  lowbit::train::Checkpoint Make(const std::string& dir, std::shared_ptr<lowbit::comm::ProcessGroup> pg) {
    lowbit::train::Checkpoint ckpt(dir, std::move(pg));
    ckpt.Model(*net).Optimizer("adam8bit", *opt).Ddp(*ddp).Sparsifier(*sparsifier).Counter("step", &step);
    return ckpt;
  }
  Net net{nullptr};
  std::unique_ptr<lowbit::sparsity::Sparsifier> sparsifier;
  std::unique_ptr<lowbit::comm::DistributedDataParallel> ddp;
  std::unique_ptr<lowbit::optim::Adam8bit> opt;
  int64_t step = 0;
  int rank = 0;
};

// Whether `f` throws an error whose what() has `needle` and no backtrace.
template <typename F>
bool Loud(const char* what, F f, const std::string& needle, int rank) {
  try {
    f();
  } catch (const std::exception& e) {
    const std::string message = e.what();
    const bool ok =
        message.find(needle) != std::string::npos && message.find("Exception raised from") == std::string::npos;
    if (!ok || rank == 0) std::cout << "consumer: " << what << ": " << (ok ? "" : "UNEXPECTED ") << message << "\n";
    return ok;
  }
  std::cout << "consumer: " << what << ": no error\n";
  return false;
}

bool MistakesAreLoud(std::shared_ptr<lowbit::comm::ProcessGroup> pg) {
  torch::manual_seed(3);
  Net net;
  lowbit::comm::DistributedDataParallel ddp(net.ptr(), pg);
  lowbit::qat::QatConfig w4a8 = lowbit::qat::PresetConfig("w4a8");
  w4a8.first_last.reset();           // every layer 4-bit LSQ: learned step sizes
  lowbit::qat::Prepare(*net, w4a8);  // too late: DDP's buckets are built
  const bool qat = Loud(
      "QAT after DDP",
      [&] {
        torch::nn::functional::cross_entropy(net->forward(torch::ones({8, 16})), torch::zeros({8}, torch::kLong))
            .backward();
      },
      "weight_quantizer.log_scale", pg->Rank());
  torch::manual_seed(3);
  Net other;
  lowbit::comm::DistributedDataParallel ddp2(other.ptr(), pg);
  ddp2.RegisterCommHook(lowbit::compress::MakeCommHook(pg, "qsgd"));
  const bool hook = Loud(
      "second hook", [&] { ddp2.RegisterCommHook(lowbit::compress::MakeCommHook(pg, "powersgd")); },
      "is already registered", pg->Rank());
  return qat && hook;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer CHECKPOINT_DIR\n";
    return 2;
  }
  auto pg_or = lowbit::launch::InitProcessGroup();
  if (!pg_or.ok()) {
    std::cerr << pg_or.status() << "\n";
    return 1;
  }
  std::shared_ptr<lowbit::comm::ProcessGroup> pg = *pg_or;
  try {
    Training straight(pg, 1);
    for (int i = 0; i < 8; ++i) straight.Step();

    Training first(pg, 1);
    for (int i = 0; i < 4; ++i) first.Step();
    first.Make(argv[1], pg).Save();
    Training resumed(pg, 2);  // other initial weights
    resumed.Make(argv[1], pg).Restore();
    for (int i = 0; i < 4; ++i) resumed.Step();

    bool same = true;
    auto a = straight.net->named_parameters(), b = resumed.net->named_parameters();
    for (const auto& p : a) same = same && torch::equal(p.value(), b[p.key()]);
    const double zeros = (straight.net->fc1->weight == 0).sum().item<double>() / straight.net->fc1->weight.numel();
    const bool loud = MistakesAreLoud(pg);
    const bool ok = same && zeros == 0.5 && loud;
    if (pg->Rank() == 0) {
      std::cout << "consumer " << (ok ? "ok" : "WRONG") << ": lowbit " << LOWBIT_VERSION << ", backend "
                << pg->Backend() << ", " << pg->Size() << " ranks, resumed run " << (same ? "equal" : "DIFFERS")
                << ", fc1 zeros " << zeros << ", mistakes " << (loud ? "caught" : "NOT CAUGHT") << "\n";
    }
    return ok ? 0 : 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  }
}
