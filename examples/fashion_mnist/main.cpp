// Fashion-MNIST CNN trained data-parallel with lowbit.
//
//   mpirun -np 4 build/examples/fashion_mnist/fashion_mnist --epochs 3
//   python3 -m torch.distributed.run --nproc_per_node 2 --redirects 1 --tee 1
//       --no_python build/examples/fashion_mnist/fashion_mnist
//   build/examples/fashion_mnist/fashion_mnist            # one process
//
// Rank 0 prints one line per epoch and, last, one JSON object with the results.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "examples/common/idx_reader.h"
#include "lowbit/compress/adaptive_hook.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/onebit_adam.h"
#include "lowbit/optimizers/onebit_lamb.h"
#include "lowbit/optimizers/optim_8bit.h"
#include "lowbit/optimizers/zero_one_adam.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparsifier.h"
#include "lowbit/train/checkpoint.h"

ABSL_FLAG(int, epochs, 3, "training epochs");
ABSL_FLAG(int, batch_size, 64, "examples per rank per step");
ABSL_FLAG(double, lr, -1, "learning rate (-1: 1e-3, or the 1-bit optimizer's own default: 1-bit LAMB 1e-2)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the initialisation and the per-epoch shuffle");
ABSL_FLAG(std::string, optimizer, "adam",
          "sgd (momentum 0.9), sgd0 (no momentum), adam, adamw (weight decay 1e-4), lion (fp32 state), rmsprop, "
          "adagrad; their 8-bit versions adam8bit, adamw8bit, sgd8bit, lion8bit, rmsprop8bit, adagrad8bit; or the 1-bit "
          "optimizers, which own their communication (use them with --hook allreduce): onebit_adam, zeroone_adam, "
          "onebit_lamb");
ABSL_FLAG(int64_t, percentile_clipping, 100, "8-bit optimizers and lion: clip gradients at this percentile of the last 100 norms (100: off)");
ABSL_FLAG(int64_t, freeze_step, -1,
          "onebit_adam/onebit_lamb: uncompressed warm-up steps; zeroone_adam: the last variance refresh "
          "(var_freeze_step); -1: the optimizer's default");
ABSL_FLAG(int64_t, onebit_block, -1,
          "1-bit optimizers: elements per 1-bit scale (0: one per exchange chunk; -1: the optimizer's default)");
ABSL_FLAG(int64_t, var_update_scaler, -1, "zeroone_adam: variance refreshes per interval doubling (kappa; -1: default)");
ABSL_FLAG(int64_t, local_step_scaler, -1,
          "zeroone_adam: local-phase steps per doubling of the sync interval (-1: default)");
ABSL_FLAG(int64_t, local_step_clipper, -1, "zeroone_adam: the longest sync interval (H; -1: default)");
ABSL_FLAG(std::string, hook, "allreduce",
          "gradient exchange: none or allreduce (uncompressed), fp16, bf16, qsgd, onebit, topk, randomk, powersgd, "
          "ternary, adaptive_powersgd, adaptive_topk, adaptive_qsgd (L-GreCo: per-layer rank, density or bits)");
ABSL_FLAG(std::string, ef, "", "error feedback: none, ef, ef21, econtrol (empty: the hook's default)");
ABSL_FLAG(double, ef_eta, lowbit::compress::defaults::kEfEta, "EControl error weight; must be about the kept fraction or less");
ABSL_FLAG(std::string, exchange, "auto", "collective of qsgd/ternary/onebit: auto, twophase or allgather");
ABSL_FLAG(int, bits, lowbit::compress::defaults::kQsgdBits, "qsgd bits per element, 1-8");
ABSL_FLAG(int, scale_norm, lowbit::compress::defaults::kOneBitScaleNorm, "onebit scale per block: 2 = RMS (DeepSpeed), 1 = mean |g|");
ABSL_FLAG(std::string, rounding, "", "qsgd/ternary: stochastic or nearest (empty: qsgd stochastic, ternary nearest)");
ABSL_FLAG(int64_t, block, lowbit::compress::defaults::kBlock, "qsgd/ternary/onebit elements per scale");
ABSL_FLAG(double, density, -1, "topk/randomk fraction of elements sent, in (0, 1] (-1: the hook's default, topk 0.01, randomk 0.1)");
ABSL_FLAG(int, rank, lowbit::compress::defaults::kPowerSgdRank, "powersgd rank");
ABSL_FLAG(int64_t, start_iter, -1, "uncompressed steps first (-1: powersgd 10, others 0)");
ABSL_FLAG(bool, warm_start, true, "powersgd: reuse Q across steps");
ABSL_FLAG(double, min_compression_rate, lowbit::compress::defaults::kMinCompressionRate, "powersgd: compress a matrix only if it shrinks this much");
ABSL_FLAG(double, momentum_correction, 0.0, "topk (DGC): momentum correction factor; use with --optimizer sgd0");
ABSL_FLAG(double, clip_norm, 0.0, "topk (DGC): local gradient clipping norm (0: off)");
ABSL_FLAG(double, sample_ratio, 0.0, "topk (DGC): threshold from this fraction of |g| (0: exact top-k)");
ABSL_FLAG(int64_t, warmup_steps, -1, "topk (DGC): density warm-up steps (-1: the hook's default, topk 200)");
ABSL_FLAG(int64_t, min_compress_numel, -1,
          "smaller tensors are sent uncompressed (-1: the hook's default, 1024; topk 8192)");
ABSL_FLAG(bool, compress_1d, false, "also compress 1-D tensors (biases)");
ABSL_FLAG(int64_t, adapt_period, lowbit::compress::defaults::kAdaptPeriod, "adaptive_*: steps between per-layer decisions");
ABSL_FLAG(int64_t, adapt_window, lowbit::compress::defaults::kAdaptWindow, "adaptive_*: steps of gradients summed for each decision (<= period)");
ABSL_FLAG(double, adapt_alpha, lowbit::compress::defaults::kAdaptAlpha, "adaptive_*: error budget as a multiple of the uniform setting's error");
ABSL_FLAG(std::string, adapt_candidates, "auto",
          "adaptive_*: comma-separated ranks, densities or bits to choose from (auto: around --rank/--density/--bits)");
ABSL_FLAG(std::string, adapt_overrides, "",
          "adaptive_*: per-parameter settings, e.g. 'fc2.*=plain,conv2.weight=0.05' (fnmatch patterns)");
ABSL_FLAG(std::string, backend, "auto", "process group: auto, mpi, gloo, nccl or local");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist", "directory of the gzipped IDX files");
ABSL_FLAG(std::string, metrics_csv, "", "if set, rank 0 writes one CSV row per epoch here");
ABSL_FLAG(int, threads, 1, "intra-op threads per rank");
ABSL_FLAG(std::string, checkpoint, "", "if set, a directory: save model, optimizer, hook state, masks, epoch and RNG there after every epoch");
ABSL_FLAG(std::string, resume, "", "if set, continue from this checkpoint directory");
ABSL_FLAG(int, max_train_examples, 0, "use only the first N training images (0: all); for quick runs");
ABSL_FLAG(double, bucket_cap_mb, 25.0, "DDP bucket size in MB");
ABSL_FLAG(std::string, qat, "",
          "quantization-aware or low-bit training: w8a8, w4a8, w4a4_lsq, w4a4_quest, w2a2_quest, w1a1_quest, "
          "int8_train, fp8_train (empty: fp32)");
ABSL_FLAG(std::string, sparsity, "",
          "sparse training of conv2, fc1 and fc2: 2:4_srste, 4:8_srste, 2:4_pgf, gmp90 (empty: dense)");
ABSL_FLAG(int64_t, sparsity_steps, 0,
          "optimizer steps the --sparsity schedules (PGF, GMP) span (0: this run's; a run stopped for --resume "
          "sets the whole run's)");

namespace {

namespace nn = torch::nn;
using lowbit::comm::ProcessGroup;

// Written the ordinary LibTorch way; its layers are lowbit::qat's, which are
// torch's until --qat's Prepare configures them.
struct CnnImpl : nn::Module {
  CnnImpl() {
    conv1 = register_module("conv1", lowbit::qat::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)));
    conv2 = register_module("conv2", lowbit::qat::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)));
    fc1 = register_module("fc1", lowbit::qat::Linear(32 * 7 * 7, 128));
    fc2 = register_module("fc2", lowbit::qat::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    return fc2(torch::relu(fc1(x.flatten(1))));
  }
  lowbit::qat::Conv2d conv1{nullptr}, conv2{nullptr};
  lowbit::qat::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Cnn);

struct Config {
  int epochs, batch_size, threads, max_train_examples;
  double lr, bucket_cap_mb;
  uint64_t seed;
  std::string optimizer, hook, backend, data_dir, metrics_csv, checkpoint, resume;
  lowbit::compress::HookSettings hook_settings;
  int64_t freeze_step, onebit_block, var_update_scaler, local_step_scaler, local_step_clipper;
  int64_t percentile_clipping = 100;  // set after the positional initialisation
  std::string qat;
  std::string sparsity;
  int64_t sparsity_steps = 0;
  bool lr_given = false;  // --lr was set; else 1e-3, or a 1-bit optimizer's own default
};

bool IsKnownOptimizer(const std::string& o) {
  for (const char* name : {"sgd", "sgd0", "adam", "adamw", "lion", "rmsprop", "adagrad", "adam8bit", "adamw8bit",
                           "sgd8bit", "lion8bit", "rmsprop8bit", "adagrad8bit", "onebit_adam", "zeroone_adam",
                           "onebit_lamb"}) {
    if (o == name) return true;
  }
  return false;
}

bool IsOneBit(const std::string& optimizer) {
  return optimizer == "onebit_adam" || optimizer == "zeroone_adam" || optimizer == "onebit_lamb";
}

// Whether --name was given a value other than its default.
bool FlagSet(const char* name) {
  const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
  return f != nullptr && f->CurrentValue() != f->DefaultValue();
}

// Flag values that parse but make no sense, as "--flag must be ..., got ...".
std::string ValidateFlags(const Config& c) {
  if (c.epochs < 1) return absl::StrCat("--epochs must be >= 1, got ", c.epochs);
  if (c.batch_size < 1) return absl::StrCat("--batch_size must be >= 1, got ", c.batch_size);
  if (!(c.lr > 0)) return absl::StrCat("--lr must be > 0, got ", c.lr);
  if (c.threads < 1) return absl::StrCat("--threads must be >= 1, got ", c.threads);
  if (c.max_train_examples < 0) return absl::StrCat("--max_train_examples must be >= 0, got ", c.max_train_examples);
  if (!(c.bucket_cap_mb > 0)) return absl::StrCat("--bucket_cap_mb must be > 0, got ", c.bucket_cap_mb);
  if (!IsKnownOptimizer(c.optimizer)) {
    return absl::StrCat("--optimizer must be sgd, sgd0, adam, adamw, lion, rmsprop, adagrad, adam8bit, adamw8bit, "
                        "sgd8bit, lion8bit, rmsprop8bit, adagrad8bit, onebit_adam, zeroone_adam or onebit_lamb, got '",
                        c.optimizer, "'");
  }
  if (!c.qat.empty()) {
    const std::vector<std::string> presets = lowbit::qat::PresetNames();
    if (std::find(presets.begin(), presets.end(), c.qat) == presets.end()) {
      std::string known;
      for (const auto& p : presets) known += (known.empty() ? "" : ", ") + p;
      return absl::StrCat("--qat must be empty (fp32) or one of ", known, ", got '", c.qat, "'");
    }
  }
  if (!c.sparsity.empty() && c.sparsity != "2:4_srste" && c.sparsity != "4:8_srste" && c.sparsity != "2:4_pgf" &&
      c.sparsity != "gmp90") {
    return absl::StrCat("--sparsity must be empty (dense) or one of 2:4_srste, 4:8_srste, 2:4_pgf, gmp90, got '",
                        c.sparsity, "'");
  }
  if (c.sparsity_steps < 0) return absl::StrCat("--sparsity_steps must be >= 0, got ", c.sparsity_steps);
  if (c.percentile_clipping < 1 || c.percentile_clipping > 100) {
    return absl::StrCat("--percentile_clipping must be in [1, 100], got ", c.percentile_clipping);
  }
  if (IsOneBit(c.optimizer) && c.hook != "allreduce" && c.hook != "none") {
    return absl::StrCat("--optimizer ", c.optimizer, " owns its communication; --hook must be allreduce, got '",
                        c.hook, "'");
  }
  if (FlagSet("freeze_step") && c.freeze_step < 0) {
    return absl::StrCat("--freeze_step must be >= 0, got ", c.freeze_step);
  }
  if (!lowbit::launch::ParseBackend(c.backend).ok()) {
    return absl::StrCat("--backend must be auto, mpi, gloo, nccl or local, got '", c.backend, "'");
  }
  return "";
}

// The hook's settings from the flags: every registry key whose flag (the key
// itself, or --ef and --momentum_correction) was set to something other
// than its default. MakeCommHook refuses keys the hook does not take and
// values out of range, naming both. The training seed also seeds the hook.
lowbit::compress::HookSettings HookSettingsFromFlags(const std::string& hook, uint64_t seed) {
  lowbit::compress::HookSettings settings;
  std::set<std::string> keys;
  for (const lowbit::compress::HookInfo& info : lowbit::compress::HookRegistry()) {
    for (const lowbit::compress::HookSetting& s : info.settings) keys.insert(s.key);
  }
  for (const std::string& key : keys) {
    const std::string flag = key == "error_feedback" ? "ef" : key == "momentum" ? "momentum_correction" : key;
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(flag);
    if (f == nullptr || key == "seed") continue;
    if (FlagSet(flag.c_str())) settings.emplace_back(key, f->CurrentValue());
  }
  const std::vector<lowbit::compress::HookInfo>& all = lowbit::compress::HookRegistry();
  const bool known = std::any_of(all.begin(), all.end(), [&](const auto& h) { return h.name == hook; });
  if (known && lowbit::compress::FindHook(hook).Find("seed") != nullptr) settings.emplace_back("seed", std::to_string(seed));
  return settings;
}

// The 1-bit optimizers take over DDP's communication (see optimizers/onebit_optimizer.h).
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const Config& c, Cnn& model,
                                                       lowbit::comm::DistributedDataParallel& ddp) {
  // Flags left at their defaults give the optimizer's own defaults (the
  // settings docs/optimizers.md measured best), not the example's.
  if (c.optimizer == "onebit_adam") {
    lowbit::optim::OneBitAdamOptions o;
    if (c.lr_given) o.lr(c.lr);
    if (FlagSet("freeze_step")) o.freeze_step(c.freeze_step);
    if (FlagSet("onebit_block")) o.block(c.onebit_block);
    return std::make_unique<lowbit::optim::OneBitAdam>(model->parameters(), ddp, o);
  }
  if (c.optimizer == "zeroone_adam") {
    lowbit::optim::ZeroOneAdamOptions o;
    if (c.lr_given) o.lr(c.lr);
    if (FlagSet("freeze_step")) o.var_freeze_step(c.freeze_step);
    if (FlagSet("var_update_scaler")) o.var_update_scaler(c.var_update_scaler);
    if (FlagSet("local_step_scaler")) o.local_step_scaler(c.local_step_scaler);
    if (FlagSet("local_step_clipper")) o.local_step_clipper(c.local_step_clipper);
    if (FlagSet("onebit_block")) o.block(c.onebit_block);
    return std::make_unique<lowbit::optim::ZeroOneAdam>(model->parameters(), ddp, o);
  }
  if (c.optimizer == "onebit_lamb") {
    lowbit::optim::OneBitLambOptions o;
    if (c.lr_given) o.lr(c.lr);
    if (FlagSet("freeze_step")) o.freeze_step(c.freeze_step);
    if (FlagSet("onebit_block")) o.block(c.onebit_block);
    return std::make_unique<lowbit::optim::OneBitLamb>(model->parameters(), ddp, o);
  }
  // 8-bit optimizers: the same hyper-parameters as their fp32 counterparts below.
  namespace lo = lowbit::optim;
  const int64_t pc = c.percentile_clipping;
  if (c.optimizer == "adam8bit") return std::make_unique<lo::Adam8bit>(model->parameters(), lo::Adam8bitOptions(c.lr).percentile_clipping(pc));
  if (c.optimizer == "adamw8bit") {
    return std::make_unique<lo::AdamW8bit>(model->parameters(), lo::AdamW8bitOptions(c.lr).weight_decay(1e-4).percentile_clipping(pc));
  }
  if (c.optimizer == "sgd8bit") {
    return std::make_unique<lo::SGD8bit>(model->parameters(), lo::SGD8bitOptions(c.lr).momentum(0.9).percentile_clipping(pc));
  }
  if (c.optimizer == "lion8bit" || c.optimizer == "lion") {
    // lion: the same optimizer with fp32 state for every parameter (LibTorch has no Lion).
    const int64_t min_8bit = c.optimizer == "lion" ? std::numeric_limits<int64_t>::max() : 4096;
    return std::make_unique<lo::Lion8bit>(model->parameters(),
                                          lo::Lion8bitOptions(c.lr).min_8bit_size(min_8bit).percentile_clipping(pc));
  }
  if (c.optimizer == "rmsprop8bit") {
    return std::make_unique<lo::RMSprop8bit>(model->parameters(), lo::RMSprop8bitOptions(c.lr).percentile_clipping(pc));
  }
  if (c.optimizer == "rmsprop") return std::make_unique<torch::optim::RMSprop>(model->parameters(), torch::optim::RMSpropOptions(c.lr));
  if (c.optimizer == "adagrad8bit") {
    return std::make_unique<lo::Adagrad8bit>(model->parameters(), lo::Adagrad8bitOptions(c.lr).percentile_clipping(pc));
  }
  if (c.optimizer == "adagrad") return std::make_unique<torch::optim::Adagrad>(model->parameters(), torch::optim::AdagradOptions(c.lr));
  if (c.optimizer == "sgd" || c.optimizer == "sgd0") {
    return std::make_unique<torch::optim::SGD>(model->parameters(),
                                               torch::optim::SGDOptions(c.lr).momentum(c.optimizer == "sgd" ? 0.9 : 0.0));
  }
  if (c.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(model->parameters(),
                                                 torch::optim::AdamWOptions(c.lr).weight_decay(1e-4));
  }
  return std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(c.lr));
}

// FNV-1a over every parameter's bytes, in registration order.
std::string ParamChecksum(Cnn& model) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& p : model->parameters()) {
    at::Tensor c = p.detach().contiguous();
    const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
    for (int64_t i = 0; i < c.numel() * static_cast<int64_t>(c.element_size()); ++i) {
      h = (h ^ bytes[i]) * 1099511628211ULL;
    }
  }
  std::ostringstream out;
  out << std::hex << std::setw(16) << std::setfill('0') << h;
  return out.str();
}

// --sparsity's settings for a run of total_steps optimizer steps. conv1 (one
// input channel) stays dense in every mode. SR-STE (Zhou et al. 2021)
// recomputes masks every step with lambda 2e-4; PGF steps 4:4 -> 3:4 -> 2:4
// and decays beta over the first half; GMP (Zhu & Gupta 2017) prunes from 10%
// to 70% of the run, about 20 mask updates.
lowbit::sparsity::SparseConfig SparsityConfig(const std::string& mode, int64_t total_steps) {
  lowbit::sparsity::SparseConfig c;
  if (mode == "4:8_srste") {
    c.n = 4;
    c.m = 8;
  } else if (mode == "2:4_pgf") {
    c.method = lowbit::sparsity::Method::kPgf;
    c.end_step = total_steps / 2;
  } else if (mode == "gmp90") {
    const int64_t start = total_steps / 10, end = total_steps * 7 / 10;
    c = lowbit::sparsity::GmpConfig(0.9, start, end, std::max<int64_t>(1, (end - start) / 20), /*global=*/true);
  }
  return c;
}

// Fraction of exact zeros in the conv and linear weights.
double WeightSparsity(Cnn& model) {
  int64_t zeros = 0, total = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.value().dim() < 2) continue;
    zeros += (p.value() == 0).sum().item<int64_t>();
    total += p.value().numel();
  }
  return total > 0 ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

// The settings every rank must share that no library object compares (DDP
// compares the model and the hook, the 1-bit optimizers their own), and the
// Sparsifier's per-layer configs: a rank started with other flags fails at
// start-up instead of training a different model.
std::vector<std::string> TrainingSettings(const Config& c, const lowbit::sparsity::Sparsifier* sparsifier) {
  std::vector<std::string> lines = {
      absl::StrCat("--epochs=", c.epochs), absl::StrCat("--batch_size=", c.batch_size),
      absl::StrCat("--lr=", c.lr), absl::StrCat("--seed=", c.seed),
      absl::StrCat("--max_train_examples=", c.max_train_examples), absl::StrCat("--optimizer=", c.optimizer),
      absl::StrCat("--percentile_clipping=", c.percentile_clipping), absl::StrCat("--qat=", c.qat),
      absl::StrCat("--sparsity=", c.sparsity), absl::StrCat("--sparsity_steps=", c.sparsity_steps)};
  if (sparsifier != nullptr) {
    for (const std::string& line : sparsifier->Settings()) lines.push_back("sparsifier: " + line);
  }
  return lines;
}

// The adaptive hooks' per-layer settings ("name=value;..."), else empty.
std::string LayerChoices(lowbit::comm::DistributedDataParallel& ddp) {
  const auto* adaptive = dynamic_cast<const lowbit::compress::AdaptiveHook*>(&ddp.comm_hook());
  return adaptive ? adaptive->ChoicesString() : "";
}

// Fraction of the test set classified correctly, each rank scoring a shard.
double TestAccuracy(Cnn& model, const lowbit::examples::ImageSet& test, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t n = test.images.size(0);
  const int64_t begin = n * pg.Rank() / pg.Size(), end = n * (pg.Rank() + 1) / pg.Size();
  int64_t correct = 0;
  for (int64_t i = begin; i < end; i += 1000) {
    const int64_t len = std::min<int64_t>(1000, end - i);
    correct += model->forward(test.images.narrow(0, i, len))
                   .argmax(1)
                   .eq(test.labels.narrow(0, i, len))
                   .sum()
                   .item<int64_t>();
  }
  model->train();
  at::Tensor total = torch::tensor({static_cast<double>(correct)}, torch::kDouble);
  pg.AllReduce(total)->Wait();
  return total.item<double>() / static_cast<double>(n);
}

int Run(const Config& c) {
  torch::set_num_threads(c.threads);
  auto pg_or = lowbit::launch::InitProcessGroup({.backend = *lowbit::launch::ParseBackend(c.backend)});
  if (!pg_or.ok()) {
    std::cerr << "error: " << pg_or.status().message() << "\n";
    return 1;
  }
  std::shared_ptr<ProcessGroup> pg = *pg_or;
  const int rank = pg->Rank(), world = pg->Size();
  const bool lead = rank == 0;

  absl::StatusOr<lowbit::examples::FashionMnist> data = lowbit::examples::LoadFashionMnist(c.data_dir);
  if (!data.ok()) {
    std::cerr << "error: " << data.status().message() << "\n";
    return 1;
  }
  int64_t train_n = data->train.images.size(0);
  if (c.max_train_examples > 0) train_n = std::min<int64_t>(train_n, c.max_train_examples);
  const int64_t steps_per_epoch = train_n / (static_cast<int64_t>(c.batch_size) * world);
  TORCH_CHECK(steps_per_epoch > 0, "--batch_size ", c.batch_size, " x ", world, " ranks exceeds the ", train_n,
              " training examples");

  torch::manual_seed(c.seed);
  Cnn model;
  if (!c.qat.empty()) lowbit::qat::Prepare(*model, lowbit::qat::PresetConfig(c.qat));
  if (!c.qat.empty() && c.resume.empty()) {
    // Initial LSQ steps, PACT alphas and observer ranges from one batch that
    // is the same on every rank (the first 256 training images); a resumed
    // run restores them.
    lowbit::qat::Calibrate(*model, [&] { model->forward(data->train.images.narrow(0, 0, std::min<int64_t>(256, train_n))); });
  }
  // After the model (and its QAT layers) is final, before DDP: masks from the
  // weights every rank now holds (a resumed run restores the checkpoint's).
  std::unique_ptr<lowbit::sparsity::Sparsifier> sparsifier;
  if (!c.sparsity.empty()) {
    sparsifier = std::make_unique<lowbit::sparsity::Sparsifier>(
        *model,
        SparsityConfig(c.sparsity, c.sparsity_steps > 0 ? c.sparsity_steps : int64_t{c.epochs} * steps_per_epoch),
        std::vector<std::pair<std::string, std::optional<lowbit::sparsity::SparseConfig>>>{{"conv1", std::nullopt}});
  }
  lowbit::comm::CheckSameOnAllRanks(*pg, TrainingSettings(c, sparsifier.get()), "training settings", "fashion_mnist");
  lowbit::comm::DistributedDataParallel ddp(model.ptr(), pg, {.bucket_cap_mb = c.bucket_cap_mb});
  lowbit::compress::AdaptCallback on_adapt;
  if (lead) {
    on_adapt = [](int64_t step, const std::string& changes) {
      std::cout << "L-GreCo step " << step << ": " << changes << std::endl;
    };
  }
  ddp.RegisterCommHook(lowbit::compress::MakeCommHook(pg, c.hook, c.hook_settings, on_adapt));
  std::unique_ptr<torch::optim::Optimizer> opt = MakeOptimizer(c, model, ddp);
  auto* onebit = dynamic_cast<lowbit::optim::OneBitOptimizer*>(opt.get());
  // Model, optimizer, hook state, masks, the epoch and the RNG, per rank.
  int64_t epochs_done = 0;
  auto make_checkpoint = [&](const std::string& dir) {
    lowbit::train::Checkpoint ckpt(dir, pg);
    ckpt.Model(*model).Optimizer("optimizer", *opt).Ddp(ddp).Counter("epochs_done", &epochs_done);
    if (sparsifier) ckpt.Sparsifier(*sparsifier);
    return ckpt;
  };
  if (!c.resume.empty()) make_checkpoint(c.resume).Restore();
  std::optional<lowbit::train::Checkpoint> checkpoint;
  if (!c.checkpoint.empty()) checkpoint.emplace(make_checkpoint(c.checkpoint));
  const int start_epoch = static_cast<int>(epochs_done);

  std::ofstream csv;
  if (lead && !c.metrics_csv.empty()) {
    csv.open(c.metrics_csv, start_epoch > 0 ? std::ios::app : std::ios::trunc);
    TORCH_CHECK(csv.good(), "--metrics_csv: cannot write ", c.metrics_csv);
    if (start_epoch == 0) {
      csv << "epoch,train_loss,test_accuracy,images_per_second,bytes_sent_per_step,comm_seconds_per_step,"
             "wait_seconds_per_step,layer_choices\n";
    }
  }
  if (lead) {
    std::cout << "fashion_mnist: " << world << " rank(s), backend " << pg->Backend() << ", hook "
              << ddp.comm_hook().Name() << ", optimizer " << c.optimizer << (c.qat.empty() ? "" : ", qat " + c.qat) << (c.sparsity.empty() ? "" : ", sparsity " + c.sparsity) << ", " << steps_per_epoch
              << " steps/epoch of " << c.batch_size << " x " << world << " images" << std::endl;
  }

  const auto t_start = std::chrono::steady_clock::now();
  double train_loss = 0, accuracy = 0, images_per_second = 0;
  int64_t bytes_sent = 0, dense_bytes = 0, total_steps = 0, skipped_steps = 0;
  double comm_seconds = 0, wait_seconds = 0, last_epoch_seconds = 0;
  double flip_sum = 0;  // --qat: weight level flips per step, summed over the last epoch
  int64_t flip_steps = 0;
  int64_t last_epoch_bytes = 0;
  for (int epoch = start_epoch; epoch < c.epochs; ++epoch) {
    const auto t_epoch = std::chrono::steady_clock::now();
    torch::Generator gen = at::detail::createCPUGenerator(c.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    at::Tensor order = torch::randperm(train_n, gen);
    double loss_sum = 0;
    int64_t epoch_bytes = 0;
    double epoch_comm = 0, epoch_wait = 0;
    flip_sum = 0;
    flip_steps = 0;
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      at::Tensor idx = order.narrow(0, (step * world + rank) * c.batch_size, c.batch_size);
      at::Tensor x = data->train.images.index_select(0, idx);
      at::Tensor y = data->train.labels.index_select(0, idx);
      const int64_t sent_before = pg->Traffic().bytes_sent;
      opt->zero_grad();
      at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      if (ddp.LastStepStats().nonfinite) {
        ++skipped_steps;  // some rank's gradients were NaN/Inf: skip, as AMP's GradScaler does
      } else {
        if (sparsifier) {
          sparsifier->Step(*opt);
        } else {
          opt->step();
        }
        if (onebit != nullptr && onebit->LastStepStats().skipped) ++skipped_steps;
      }
      loss_sum += loss.item<double>();
      if (!c.qat.empty()) {
        const double flips = lowbit::qat::MeanFlipFraction(*model);
        if (flips >= 0) {
          flip_sum += flips;
          ++flip_steps;
        }
      }
      const lowbit::comm::DdpStepStats& s = ddp.LastStepStats();
      epoch_bytes += pg->Traffic().bytes_sent - sent_before;  // DDP's and the optimizer's
      dense_bytes = s.dense_bytes;
      epoch_comm += s.comm_seconds;
      epoch_wait += s.wait_seconds;
    }
    const double epoch_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    at::Tensor mean_loss = torch::tensor({loss_sum / steps_per_epoch}, torch::kDouble);
    pg->AllReduce(mean_loss, lowbit::comm::ReduceOp::kAvg)->Wait();
    train_loss = mean_loss.item<double>();
    accuracy = TestAccuracy(model, data->test, *pg);
    images_per_second = static_cast<double>(steps_per_epoch * c.batch_size * world) / epoch_seconds;
    last_epoch_seconds = epoch_seconds;
    last_epoch_bytes = epoch_bytes;
    bytes_sent += epoch_bytes;
    comm_seconds += epoch_comm;
    wait_seconds += epoch_wait;
    total_steps += steps_per_epoch;
    if (lead) {
      std::cout << "epoch " << epoch + 1 << "/" << c.epochs << "  loss " << std::fixed << std::setprecision(4)
                << train_loss << "  test_accuracy " << accuracy << "  images/s " << std::setprecision(0)
                << images_per_second << "  MB sent/rank " << std::setprecision(1) << epoch_bytes / 1e6
                << "  comm s " << std::setprecision(2) << epoch_comm << "  wait s " << epoch_wait << std::endl;
      if (csv.is_open()) {
        csv << epoch + 1 << "," << train_loss << "," << accuracy << "," << images_per_second << ","
            << epoch_bytes / steps_per_epoch << "," << epoch_comm / steps_per_epoch << ","
            << epoch_wait / steps_per_epoch << "," << LayerChoices(ddp) << "\n";
        csv.flush();
      }
    }
    if (checkpoint) {
      epochs_done = epoch + 1;
      checkpoint->Save();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const std::string checksum = ParamChecksum(model);
  // 8-bit optimizers: state bytes per parameter element (fp32 Adam: 8).
  double state_bytes_per_param = 0;
  if (auto* eight = dynamic_cast<lowbit::optim::Blockwise8bitOptimizer*>(opt.get())) {
    state_bytes_per_param = static_cast<double>(eight->StateBytes()) / std::max<int64_t>(1, eight->StateElements());
  }
  if (lead) {
    const int64_t steps = std::max<int64_t>(total_steps, 1);
    std::cout << std::setprecision(6) << std::defaultfloat;
    std::cout << "{\"example\":\"fashion_mnist\",\"test_accuracy\":" << accuracy << ",\"train_loss\":" << train_loss
              << ",\"epochs\":" << c.epochs << ",\"world_size\":" << world << ",\"backend\":\"" << pg->Backend()
              << "\",\"hook\":\"" << ddp.comm_hook().Name() << "\",\"optimizer\":\"" << c.optimizer
              << "\",\"batch_size\":" << c.batch_size << ",\"steps\":" << total_steps << ",\"seconds\":" << seconds
              << ",\"images_per_second\":" << images_per_second
              << ",\"bytes_sent_per_step\":" << bytes_sent / steps << ",\"dense_bytes_per_step\":" << dense_bytes
              << ",\"compression_ratio\":" << static_cast<double>(dense_bytes) / std::max<int64_t>(1, bytes_sent / steps)
              << ",\"last_epoch_bytes_sent_per_step\":" << last_epoch_bytes / steps_per_epoch
              << ",\"last_epoch_seconds_per_step\":" << last_epoch_seconds / static_cast<double>(steps_per_epoch)
              << ",\"skipped_steps\":" << skipped_steps << ",\"hook_config\":\"" << ddp.comm_hook().Config()
              << "\",\"comm_seconds_per_step\":" << comm_seconds / steps
              << ",\"wait_seconds_per_step\":" << wait_seconds / steps << ",\"layer_choices\":\"" << LayerChoices(ddp)
              << "\",\"optimizer_state_bytes_per_param\":" << state_bytes_per_param << ",\"qat\":\"" << c.qat
              << "\",\"weight_flip_fraction\":" << (flip_steps > 0 ? flip_sum / flip_steps : -1.0)
              << ",\"sparsity\":\"" << c.sparsity << "\",\"weight_sparsity\":" << WeightSparsity(model)
              << ",\"param_checksum\":\"" << checksum
              << "\"}" << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Config c{absl::GetFlag(FLAGS_epochs),        absl::GetFlag(FLAGS_batch_size), absl::GetFlag(FLAGS_threads),
           absl::GetFlag(FLAGS_max_train_examples), absl::GetFlag(FLAGS_lr), absl::GetFlag(FLAGS_bucket_cap_mb),
           absl::GetFlag(FLAGS_seed),          absl::GetFlag(FLAGS_optimizer), absl::GetFlag(FLAGS_hook),
           absl::GetFlag(FLAGS_backend),       absl::GetFlag(FLAGS_data_dir), absl::GetFlag(FLAGS_metrics_csv),
           absl::GetFlag(FLAGS_checkpoint),    absl::GetFlag(FLAGS_resume)};
  c.lr_given = c.lr != -1;
  if (!c.lr_given) c.lr = 1e-3;
  c.freeze_step = absl::GetFlag(FLAGS_freeze_step);
  c.percentile_clipping = absl::GetFlag(FLAGS_percentile_clipping);
  c.qat = absl::GetFlag(FLAGS_qat);
  c.sparsity = absl::GetFlag(FLAGS_sparsity);
  c.sparsity_steps = absl::GetFlag(FLAGS_sparsity_steps);
  c.var_update_scaler = absl::GetFlag(FLAGS_var_update_scaler);
  c.onebit_block = absl::GetFlag(FLAGS_onebit_block);
  c.local_step_scaler = absl::GetFlag(FLAGS_local_step_scaler);
  c.local_step_clipper = absl::GetFlag(FLAGS_local_step_clipper);
  c.hook_settings = HookSettingsFromFlags(c.hook, c.seed);
  const std::string invalid = ValidateFlags(c);
  if (!invalid.empty()) {
    std::cerr << "error: " << invalid << "\n";
    return 2;
  }
  try {
    // The hook and its settings are checked before any rank starts: a key
    // the hook does not take, or a value out of range, names both.
    lowbit::compress::MakeCommHook(std::make_shared<lowbit::comm::LocalProcessGroup>(), c.hook, c.hook_settings);
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 2;
  }
  try {
    return Run(c);
  } catch (const c10::Error& e) {  // the message, without LibTorch's C++ backtrace
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
