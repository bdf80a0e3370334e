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

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "examples/common/idx_reader.h"
#include "examples/common/methods.h"
#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/diloco.h"
#include "lowbit/optimizers/onebit_optimizer.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparsifier.h"
#include "lowbit/train/checkpoint.h"

ABSL_FLAG(int, epochs, 3, "training epochs");
ABSL_FLAG(int, batch_size, 64, "examples per rank per step");
ABSL_FLAG(std::string, optimizer, "adam",
          "sgd (momentum 0.9), sgd0 (no momentum), adam, adamw (weight decay 1e-4), lion (fp32 state), rmsprop, "
          "adagrad; their 8-bit versions adam8bit, adamw8bit, sgd8bit, lion8bit, rmsprop8bit, adagrad8bit; or the 1-bit "
          "optimizers, which own their communication (use them with --hook allreduce): onebit_adam, zeroone_adam, "
          "onebit_lamb; demo; spam, stable_spam, stable_spam8bit (Adam with spike clipping and momentum resets)");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist", "directory of the gzipped IDX files");
ABSL_FLAG(int, max_train_examples, 0, "use only the first N training images (0: all); for quick runs");
ABSL_FLAG(std::string, init_model, "", "start from the model saved by --save_model; loaded before --qat prepares it");
ABSL_FLAG(std::string, save_model, "", "rank 0 saves the trained model here (torch::save) at the end");
ABSL_FLAG(bool, e2e_qp, false,
          "EfficientQAT's E2E-QP: after --qat (lsq weights) fix the integer weights and train only the step sizes");
ABSL_FLAG(std::string, peer_check_dir, "",
          "write the seeded model's parameters, the first batch and its loss to this folder and exit (what "
          "bench/peers/fashion_ddp.py --check compares against)");
ABSL_FLAG(int64_t, checkpoint_every, 0,
          "with --checkpoint: also save every N steps within an epoch (0: at the end of each epoch only)");
ABSL_FLAG(int64_t, report_resources_every, 0,
          "every N steps print a JSON line with the largest resident memory, thread and open-file counts of any "
          "rank (0: never); scripts/soak.sh reads it");
ABSL_FLAG(std::string, sparsity, "",
          "sparse training of conv2, fc1 and fc2: 2:4_srste, 4:8_srste, 2:4_pgf, gmp90 (empty: dense)");

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
  int epochs, batch_size, max_train_examples;
  std::string data_dir;
  lowbit::examples::Methods m;
  int64_t checkpoint_every = 0, report_resources_every = 0;
};

// Flag values that parse but make no sense, as "--flag must be ..., got ...".
std::string ValidateFlags(const Config& c) {
  if (c.epochs < 1) return absl::StrCat("--epochs must be >= 1, got ", c.epochs);
  if (c.batch_size < 1) return absl::StrCat("--batch_size must be >= 1, got ", c.batch_size);
  if (c.max_train_examples < 0) return absl::StrCat("--max_train_examples must be >= 0, got ", c.max_train_examples);
  if (c.checkpoint_every < 0) return absl::StrCat("--checkpoint_every must be >= 0, got ", c.checkpoint_every);
  if (c.checkpoint_every > 0 && c.m.checkpoint.empty()) {
    return absl::StrCat("--checkpoint_every ", c.checkpoint_every, " needs --checkpoint DIR to save to");
  }
  if (c.report_resources_every < 0) {
    return absl::StrCat("--report_resources_every must be >= 0, got ", c.report_resources_every);
  }
  return lowbit::examples::ValidateMethods(c.m);
}

// The settings every rank must share that no library object compares (DDP
// compares the model and the hook, the 1-bit optimizers their own), and the
// Sparsifier's per-layer configs: a rank started with other flags fails at
// start-up instead of training a different model.
std::vector<std::string> TrainingSettings(const Config& c, const lowbit::sparsity::Sparsifier* sparsifier) {
  std::vector<std::string> lines = {absl::StrCat("--epochs=", c.epochs), absl::StrCat("--batch_size=", c.batch_size),
                                    absl::StrCat("--max_train_examples=", c.max_train_examples)};
  for (const std::string& line : lowbit::examples::MethodSettings(c.m)) lines.push_back(line);
  if (sparsifier != nullptr) {
    for (const std::string& line : sparsifier->Settings()) lines.push_back("sparsifier: " + line);
  }
  return lines;
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

// adamw (and adamw8bit) decay every parameter by 1e-4; the 1-bit optimizers none.
lowbit::examples::ParamSets AdamWDecayAll(CnnImpl& model) {
  lowbit::examples::ParamSets params;
  for (const at::Tensor& p : model.parameters()) {
    if (p.requires_grad()) params.decay.push_back(p);  // E2E-QP leaves only the quantizers' steps
  }
  params.weight_decay = 1e-4;
  return params;
}

// The largest resident memory, thread and open-file counts of any rank.
void ReportResources(ProcessGroup& pg, int64_t step) {
  const lowbit::examples::ResourceUsage u = lowbit::examples::ReadResourceUsage();
  at::Tensor t = torch::tensor({u.rss_kb, u.threads, u.open_files}, torch::kLong);
  pg.AllReduce(t, lowbit::comm::ReduceOp::kMax)->Wait();
  if (pg.Rank() == 0) {
    std::cout << "{\"resources\":{\"step\":" << step << ",\"max_rss_kb\":" << t[0].item<int64_t>()
              << ",\"max_threads\":" << t[1].item<int64_t>() << ",\"max_open_files\":" << t[2].item<int64_t>()
              << "}}" << std::endl;
  }
}

int Run(Config c) {
  torch::set_num_threads(c.m.threads);
  auto pg_or = lowbit::launch::InitProcessGroup({.backend = *lowbit::launch::ParseBackend(c.m.backend)});
  if (!pg_or.ok()) {
    std::cerr << "error: " << pg_or.status().message() << "\n";
    return 1;
  }
  std::shared_ptr<ProcessGroup> pg = *pg_or;
  const int rank = pg->Rank(), world = pg->Size();
  const bool lead = rank == 0;
  lowbit::examples::ResolveResume(c.m, pg, "fashion_mnist");

  absl::StatusOr<lowbit::examples::FashionMnist> data = lowbit::examples::LoadFashionMnist(c.data_dir);
  if (!data.ok()) {
    std::cerr << "error: " << data.status().message() << "\n";
    return 1;
  }
  int64_t train_n = data->train.images.size(0);
  if (c.max_train_examples > 0) train_n = std::min<int64_t>(train_n, c.max_train_examples);
  const int64_t steps_per_epoch = train_n / (static_cast<int64_t>(c.batch_size) * world);
  LOWBIT_CHECK(steps_per_epoch > 0, "--batch_size ", c.batch_size, " x ", world, " ranks exceeds the ", train_n,
              " training examples");
  // The run's length, for defaults that are a fraction of it (the momentum exchange's warm-up).
  c.m.total_steps = int64_t{c.epochs} * steps_per_epoch;
  // The CNN's width: conv2's 32 channels, so the momentum exchange's PowerSGD runs at rank 4 (20.2x at
  // -0.20 points over three seeds; fc1's 128 units would give rank 16, 6.3x at +0.09: docs/fashion_mnist.md).
  c.m.model_width = 32;

  torch::manual_seed(c.m.seed);
  Cnn model;
  if (const std::string dir = absl::GetFlag(FLAGS_peer_check_dir); !dir.empty()) {
    // The PyTorch peer's model check: parameters in named_parameters order
    // (float32), their names and shapes, the first batch_size training images
    // and labels, and the loss this model gives on them.
    const int64_t total = lowbit::examples::WriteParametersForPeer(*model, dir);
    const at::Tensor x = data->train.images.narrow(0, 0, c.batch_size).contiguous();
    const at::Tensor y = data->train.labels.narrow(0, 0, c.batch_size).contiguous();
    std::ofstream(dir + "/images.bin", std::ios::binary)
        .write(static_cast<const char*>(x.data_ptr()), static_cast<std::streamsize>(x.numel() * 4));
    std::ofstream(dir + "/labels.bin", std::ios::binary)
        .write(static_cast<const char*>(y.data_ptr()), static_cast<std::streamsize>(y.numel() * 8));
    torch::NoGradGuard no_grad;
    std::ofstream meta(dir + "/meta.json");
    meta.precision(17);
    meta << "{\"parameters\":" << total << ",\"batch\":" << c.batch_size << ",\"loss\":"
         << torch::nn::functional::cross_entropy(model->forward(x), y).item<double>() << "}\n";
    return meta.good() ? 0 : 1;
  }
  const std::string init_model = absl::GetFlag(FLAGS_init_model);
  const bool e2e_qp = absl::GetFlag(FLAGS_e2e_qp);
  LOWBIT_CHECK(!e2e_qp || !c.m.qat.empty(), "--e2e_qp trains the step sizes of --qat's quantizers; set --qat (e.g. w4_lsq)");
  if (!init_model.empty()) torch::load(model, init_model);
  if (!c.m.qat.empty()) {
    lowbit::qat::Prepare(*model, lowbit::examples::QatPreset(c.m, int64_t{c.epochs} * steps_per_epoch));
  }
  if (!c.m.qat.empty() && c.m.resume.empty() && c.m.calibrate) {
    // Initial LSQ steps, PACT alphas and observer ranges from one batch that
    // is the same on every rank (the first 256 training images); a resumed
    // run restores them.
    lowbit::qat::Calibrate(*model, [&] { model->forward(data->train.images.narrow(0, 0, std::min<int64_t>(256, train_n))); });
  }
  if (e2e_qp) lowbit::qat::FreezeLevels(*model);
  // With --init_model: its accuracy before training (after --qat: quantized without training).
  const double init_accuracy = init_model.empty() ? 0.0 : TestAccuracy(model, data->test, *pg);
  // After the model (and its QAT layers) is final, before DDP: masks from the
  // weights every rank now holds (a resumed run restores the checkpoint's).
  std::unique_ptr<lowbit::sparsity::Sparsifier> sparsifier;
  if (!c.m.sparsity.empty()) {
    sparsifier = std::make_unique<lowbit::sparsity::Sparsifier>(
        *model,
        lowbit::examples::SparsityConfig(c.m.sparsity, c.m.sparsity_steps > 0 ? c.m.sparsity_steps : int64_t{c.epochs} * steps_per_epoch),
        std::vector<std::pair<std::string, std::optional<lowbit::sparsity::SparseConfig>>>{{"conv1", std::nullopt}});
  }
  lowbit::comm::CheckSameOnAllRanks(*pg, TrainingSettings(c, sparsifier.get()), "training settings", "fashion_mnist");
  lowbit::comm::DistributedDataParallel ddp(model.ptr(), pg, {.bucket_cap_mb = c.m.bucket_cap_mb});
  lowbit::examples::RegisterHook(ddp, pg, c.m, /*print_decisions=*/lead);
  std::unique_ptr<torch::optim::Optimizer> opt = lowbit::examples::MakeOptimizer(c.m, AdamWDecayAll(*model), ddp);
  auto* onebit = dynamic_cast<lowbit::optim::OneBitOptimizer*>(opt.get());
  std::unique_ptr<lowbit::optim::DiLoCo> outer = lowbit::examples::MakeOuter(c.m, model->parameters(), ddp);
  // Model, optimizer, hook state, masks, the epoch and the RNG, per rank.
  // steps_done: steps into epoch epochs_done (--checkpoint_every saves within an epoch).
  int64_t epochs_done = 0, steps_done = 0;
  auto make_checkpoint = [&](const std::string& dir) {
    lowbit::train::Checkpoint ckpt(dir, pg);
    ckpt.Model(*model).Optimizer("optimizer", *opt).Ddp(ddp).Counter("epochs_done", &epochs_done);
    ckpt.Counter("steps_done", &steps_done);
    if (sparsifier) ckpt.Sparsifier(*sparsifier);
    if (outer) {
      ckpt.State("diloco", [&](torch::serialize::OutputArchive& a) { outer->Save(a); },
                 [&](torch::serialize::InputArchive& a) { outer->Load(a); });
    }
    return ckpt;
  };
  if (!c.m.resume.empty()) make_checkpoint(c.m.resume).Restore();
  std::optional<lowbit::train::Checkpoint> checkpoint;
  if (!c.m.checkpoint.empty()) checkpoint.emplace(make_checkpoint(c.m.checkpoint));
  const int start_epoch = static_cast<int>(epochs_done);
  LOWBIT_CHECK(steps_done >= 0 && steps_done < steps_per_epoch, "fashion_mnist: the checkpoint in ", c.m.resume,
              " stopped at step ", steps_done, " of an epoch, but this run's epochs have ", steps_per_epoch, " steps");

  std::ofstream csv;
  const bool fresh = start_epoch == 0 && steps_done == 0;
  if (lead && !c.m.metrics_csv.empty()) {
    csv.open(c.m.metrics_csv, fresh ? std::ios::trunc : std::ios::app);
    LOWBIT_CHECK(csv.good(), "--metrics_csv: cannot write ", c.m.metrics_csv);
    if (fresh) {
      csv << "epoch,train_loss,test_accuracy,images_per_second,bytes_sent_per_step,comm_seconds_per_step,"
             "wait_seconds_per_step,train_seconds,layer_choices\n";
    }
  }
  if (lead) {
    std::cout << "fashion_mnist: " << world << " rank(s), backend " << pg->Backend() << ", hook "
              << ddp.comm_hook().Name() << ", optimizer " << c.m.optimizer << (c.m.qat.empty() ? "" : ", qat " + c.m.qat) << (c.m.sparsity.empty() ? "" : ", sparsity " + c.m.sparsity) << ", " << steps_per_epoch
              << " steps/epoch of " << c.batch_size << " x " << world << " images" << std::endl;
  }

  const auto t_start = std::chrono::steady_clock::now();
  double train_loss = 0, accuracy = 0, images_per_second = 0;
  int64_t bytes_sent = 0, dense_bytes = 0, total_steps = 0, skipped_steps = 0;
  double comm_seconds = 0, wait_seconds = 0, last_epoch_seconds = 0, train_seconds = 0;
  double flip_sum = 0;  // --qat: weight level flips per step, summed over the last epoch
  int64_t flip_steps = 0;
  int64_t last_epoch_bytes = 0, last_epoch_steps = 0;
  for (int epoch = start_epoch; epoch < c.epochs; ++epoch) {
    const auto t_epoch = std::chrono::steady_clock::now();
    torch::Generator gen = at::detail::createCPUGenerator(c.m.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    at::Tensor order = torch::randperm(train_n, gen);
    double loss_sum = 0;
    int64_t epoch_bytes = 0;
    double epoch_comm = 0, epoch_wait = 0;
    flip_sum = 0;
    flip_steps = 0;
    // A run resumed from a checkpoint saved within an epoch starts where it stopped.
    const int64_t first_step = epoch == start_epoch ? steps_done : 0;
    const int64_t epoch_steps = steps_per_epoch - first_step;
    for (int64_t step = first_step; step < steps_per_epoch; ++step) {
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
      if (outer) {
        outer->Step();
        if (outer->LastStepStats().nonfinite) ++skipped_steps;
      }
      loss_sum += loss.item<double>();
      if (!c.m.qat.empty()) {
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
      const int64_t global_step = epoch * steps_per_epoch + step + 1;
      if (checkpoint && c.checkpoint_every > 0 && global_step % c.checkpoint_every == 0 && step + 1 < steps_per_epoch) {
        epochs_done = epoch;
        steps_done = step + 1;
        checkpoint->Save();
      }
      if (c.report_resources_every > 0 && global_step % c.report_resources_every == 0) ReportResources(*pg, global_step);
    }
    const double epoch_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    at::Tensor mean_loss = torch::tensor({loss_sum / static_cast<double>(epoch_steps)}, torch::kDouble);
    pg->AllReduce(mean_loss, lowbit::comm::ReduceOp::kAvg)->Wait();
    train_loss = mean_loss.item<double>();
    accuracy = TestAccuracy(model, data->test, *pg);
    images_per_second = static_cast<double>(epoch_steps * c.batch_size * world) / epoch_seconds;
    last_epoch_seconds = epoch_seconds;
    train_seconds += epoch_seconds;  // training only: the test pass above is not in epoch_seconds
    last_epoch_bytes = epoch_bytes;
    last_epoch_steps = epoch_steps;
    bytes_sent += epoch_bytes;
    comm_seconds += epoch_comm;
    wait_seconds += epoch_wait;
    total_steps += epoch_steps;
    if (lead) {
      std::cout << "epoch " << epoch + 1 << "/" << c.epochs << "  loss " << std::fixed << std::setprecision(4)
                << train_loss << "  test_accuracy " << accuracy << "  images/s " << std::setprecision(0)
                << images_per_second << "  MB sent/rank " << std::setprecision(1) << epoch_bytes / 1e6
                << "  comm s " << std::setprecision(2) << epoch_comm << "  wait s " << epoch_wait << std::endl;
      if (csv.is_open()) {
        csv << epoch + 1 << "," << train_loss << "," << accuracy << "," << images_per_second << ","
            << epoch_bytes / epoch_steps << "," << epoch_comm / static_cast<double>(epoch_steps) << ","
            << epoch_wait / static_cast<double>(epoch_steps) << "," << train_seconds << "," << lowbit::examples::LayerChoices(ddp)
            << "\n";
        csv.flush();
      }
    }
    if (checkpoint) {
      epochs_done = epoch + 1;
      steps_done = 0;
      checkpoint->Save();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const std::string checksum = lowbit::examples::ParamChecksum(*model);
  // 8-bit optimizers: state bytes per parameter element (fp32 Adam: 8).
  const double state_bytes_per_param = lowbit::examples::StateBytesPerParam(*opt);
  if (lead && !absl::GetFlag(FLAGS_save_model).empty()) torch::save(model, absl::GetFlag(FLAGS_save_model));
  if (lead) {
    const int64_t steps = std::max<int64_t>(total_steps, 1);
    std::cout << std::setprecision(6) << std::defaultfloat;
    std::cout << "{\"example\":\"fashion_mnist\",\"test_accuracy\":" << accuracy << ",\"train_loss\":" << train_loss
              << ",\"epochs\":" << c.epochs << ",\"world_size\":" << world << ",\"backend\":\"" << pg->Backend()
              << "\",\"hook\":\"" << ddp.comm_hook().Name() << "\",\"optimizer\":\"" << c.m.optimizer
              << "\",\"batch_size\":" << c.batch_size << ",\"steps\":" << total_steps << ",\"seconds\":" << seconds
              << ",\"images_per_second\":" << images_per_second
              << ",\"bytes_sent_per_step\":" << bytes_sent / steps << ",\"dense_bytes_per_step\":" << dense_bytes
              << ",\"compression_ratio\":" << static_cast<double>(dense_bytes) / std::max<int64_t>(1, bytes_sent / steps)
              << ",\"last_epoch_bytes_sent_per_step\":" << last_epoch_bytes / std::max<int64_t>(last_epoch_steps, 1)
              << ",\"last_epoch_seconds_per_step\":" << last_epoch_seconds / static_cast<double>(std::max<int64_t>(last_epoch_steps, 1))
              << ",\"skipped_steps\":" << skipped_steps << ",\"hook_config\":\"" << ddp.comm_hook().Config()
              << "\",\"comm_seconds_per_step\":" << comm_seconds / steps
              << ",\"wait_seconds_per_step\":" << wait_seconds / steps << ",\"layer_choices\":\"" << lowbit::examples::LayerChoices(ddp)
              << "\",\"optimizer_state_bytes_per_param\":" << state_bytes_per_param << ",\"qat\":\"" << c.m.qat
              << "\",\"weight_flip_fraction\":" << (flip_steps > 0 ? flip_sum / flip_steps : -1.0)
              << ",\"sparsity\":\"" << c.m.sparsity << "\",\"weight_sparsity\":" << lowbit::examples::WeightSparsity(*model)
              << ",\"frozen_weight_fraction\":" << lowbit::qat::MeanFrozenFraction(*model)
              << ",\"init_test_accuracy\":" << init_accuracy << ",\"param_checksum\":\"" << checksum
              << "\"}" << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Config c{absl::GetFlag(FLAGS_epochs), absl::GetFlag(FLAGS_batch_size), absl::GetFlag(FLAGS_max_train_examples),
           absl::GetFlag(FLAGS_data_dir),
           lowbit::examples::MethodsFromFlags(absl::GetFlag(FLAGS_optimizer), absl::GetFlag(FLAGS_sparsity), 1e-3),
           absl::GetFlag(FLAGS_checkpoint_every), absl::GetFlag(FLAGS_report_resources_every)};
  return lowbit::examples::RunMain(ValidateFlags(c), [&] { return Run(c); });
}
