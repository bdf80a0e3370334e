// A character-level GPT trained data-parallel with lowbit on the King James
// Bible (Debian's bible-kjv-text), with every lowbit method through the same
// flags as the Fashion-MNIST example.
//
//   mpirun -np 4 build/examples/gpt/gpt                      # tiny preset, AdamW
//   mpirun -np 4 build/examples/gpt/gpt --hook powersgd --rank 4
//   mpirun -np 4 build/examples/gpt/gpt --optimizer onebit_adam
//   mpirun -np 4 build/examples/gpt/gpt --qat w4a8 --sparsity 2:4_srste
//   build/examples/gpt/gpt --preset small --steps 2000       # one process
//
// Rank 0 prints a progress line every --eval_interval steps, a text sample
// from the trained model, and last one JSON object with the results.

#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "examples/common/methods.h"
#include "examples/gpt/model.h"
#include "examples/gpt/text_data.h"
#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/comm/two_level_hook.h"
#include "lowbit/compress/compeft.h"
#include "lowbit/compress/registry.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/blockwise_8bit.h"
#include "lowbit/optimizers/demo.h"
#include "lowbit/optimizers/diloco.h"
#include "lowbit/optimizers/onebit_optimizer.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparsifier.h"
#include "lowbit/train/checkpoint.h"

#ifndef LOWBIT_GPT_CORPUS
#define LOWBIT_GPT_CORPUS "data/bible-kjv.txt"
#endif

ABSL_FLAG(std::string, preset, "tiny",
          "model shape: tiny (4 layers, 4 heads, 128 wide, block 64; about 0.8M parameters), medium (6, 8, 256, "
          "block 64; about 4.8M) or small (6, 6, 384, block 128; about 10.7M)");
ABSL_FLAG(int64_t, n_layer, 0, "transformer blocks (0: the preset's)");
ABSL_FLAG(int64_t, n_head, 0, "attention heads (0: the preset's)");
ABSL_FLAG(int64_t, n_embd, 0, "embedding width, a multiple of --n_head (0: the preset's)");
ABSL_FLAG(int64_t, block_size, 0, "context length in characters (0: the preset's)");
ABSL_FLAG(double, dropout, 0.0, "dropout on embeddings, attention and residuals");
ABSL_FLAG(int64_t, steps, 600, "optimizer steps; the learning-rate schedule spans them");
ABSL_FLAG(int64_t, stop_at, 0, "stop after this step, as if interrupted (0: --steps); resume with --resume");
ABSL_FLAG(int64_t, batch_size, 16, "windows per rank per step");
ABSL_FLAG(int64_t, lr_warmup, 50, "steps of linear learning-rate warm-up; cosine decay to --min_lr_ratio x lr after");
ABSL_FLAG(double, min_lr_ratio, 0.1, "the learning rate at the last step, as a fraction of the peak");
ABSL_FLAG(double, grad_clip, 1.0, "clip the gradient's global norm to this (0: off)");
ABSL_FLAG(double, weight_decay, 0.1,
          "decoupled weight decay of the matrices and embeddings (adamw, adamw8bit, the SPAMs and the 1-bit optimizers)");
ABSL_FLAG(std::string, optimizer, "adamw",
          "adamw (the baseline), adam, sgd, sgd0, lion, rmsprop, adagrad; their 8-bit versions adamw8bit, adam8bit, "
          "sgd8bit, lion8bit, rmsprop8bit, adagrad8bit (the embeddings keep 32-bit state); or the 1-bit optimizers, "
          "which own their communication: onebit_adam, zeroone_adam, onebit_lamb; demo; spam, stable_spam, stable_spam8bit "
          "(Adam with spike clipping and momentum resets; optimizers/spam.h)");
ABSL_FLAG(std::string, sparsity, "",
          "sparse training of the MLP projections (mlp.c_fc, mlp.c_proj): 2:4_srste, 4:8_srste, 2:4_pgf, gmp90 "
          "(empty: dense)");
ABSL_FLAG(std::string, corpus, LOWBIT_GPT_CORPUS, "the text to train on (the build writes the King James Bible here)");
ABSL_FLAG(std::string, vocab_corpus, "",
          "comma-separated text files whose bytes join the vocabulary (the same for a base run and its fine-tuning "
          "on another corpus)");
ABSL_FLAG(std::string, init_model, "",
          "start from the model saved by --save_model (fine-tuning, E2E-QP); loaded before --qat prepares it");
ABSL_FLAG(std::string, save_model, "", "rank 0 saves the trained model here (torch::save) at the end");
ABSL_FLAG(std::string, compeft_base, "",
          "after training, compress (this model - the model saved here) with ComPEFT at each --compeft_densities and "
          "--compeft_alphas, apply it to the base and report the file size and validation loss");
ABSL_FLAG(std::string, compeft_densities, "0.01,0.05,0.1", "ComPEFT: fractions of each tensor kept");
ABSL_FLAG(std::string, compeft_alphas, "1,2,4", "ComPEFT: scales alpha (times std of the task vector) to try");
ABSL_FLAG(bool, qk_reparam, false,
          "with --qat: attention scores from each head's quantized W_q^T W_k (OFQ's query-key reparameterisation)");
ABSL_FLAG(bool, e2e_qp, false,
          "EfficientQAT's E2E-QP: after --qat (lsq weights) fix the integer weights and train only the step sizes");
ABSL_FLAG(int64_t, eval_interval, 100, "steps between validation and progress lines");
ABSL_FLAG(int64_t, val_windows, 512, "validation windows of block_size characters, spread over the last 10%");
ABSL_FLAG(int64_t, sample_chars, 300, "characters rank 0 samples from the trained model (0: none)");
ABSL_FLAG(double, temperature, 0.8, "sampling temperature");
ABSL_FLAG(std::string, prompt, "\n", "the sample's first characters");

namespace {

namespace gpt = lowbit::examples::gpt;
namespace ex = lowbit::examples;
using lowbit::comm::ProcessGroup;

struct Config {
  gpt::GptConfig model;
  std::string preset, corpus, prompt, init_model, save_model;
  bool e2e_qp = false, qk_reparam = false;
  int64_t steps, stop_at, batch_size, lr_warmup, eval_interval, val_windows, sample_chars;
  double min_lr_ratio, grad_clip, weight_decay, temperature;
  ex::Methods m;
};

std::string ValidateFlags(const Config& c) {
  if (c.preset != "tiny" && c.preset != "medium" && c.preset != "small") {
    return absl::StrCat("--preset must be tiny, medium or small, got '", c.preset, "'");
  }
  // ValidateGptConfig names --n_layer, --n_head, --n_embd, --block_size and --dropout.
  gpt::GptConfig shape = c.model;
  shape.vocab_size = 1;  // known once the corpus is read
  if (std::string invalid = gpt::ValidateGptConfig(shape); !invalid.empty()) return invalid;
  if (c.steps < 1) return absl::StrCat("--steps must be >= 1, got ", c.steps);
  if (c.stop_at < 0 || c.stop_at > c.steps) return absl::StrCat("--stop_at must be in [0, --steps], got ", c.stop_at);
  if (c.batch_size < 1) return absl::StrCat("--batch_size must be >= 1, got ", c.batch_size);
  if (c.lr_warmup < 0) return absl::StrCat("--lr_warmup must be >= 0, got ", c.lr_warmup);
  if (!(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1)) return absl::StrCat("--min_lr_ratio must be in [0, 1], got ", c.min_lr_ratio);
  if (!(c.grad_clip >= 0)) return absl::StrCat("--grad_clip must be >= 0, got ", c.grad_clip);
  if (!(c.weight_decay >= 0)) return absl::StrCat("--weight_decay must be >= 0, got ", c.weight_decay);
  if (c.eval_interval < 1) return absl::StrCat("--eval_interval must be >= 1, got ", c.eval_interval);
  if (c.val_windows < 1) return absl::StrCat("--val_windows must be >= 1, got ", c.val_windows);
  if (c.sample_chars < 0) return absl::StrCat("--sample_chars must be >= 0, got ", c.sample_chars);
  if (!(c.temperature > 0)) return absl::StrCat("--temperature must be > 0, got ", c.temperature);
  if (c.prompt.empty()) return "--prompt must not be empty";
  if (c.e2e_qp && c.m.qat.empty()) return "--e2e_qp trains the step sizes of --qat's quantizers; set --qat (e.g. w4_lsq)";
  if (std::string invalid = ex::ValidateMethods(c.m); !invalid.empty()) return invalid;
  if (c.qk_reparam && (c.m.qat.empty() || !lowbit::qat::PresetConfig(c.m.qat).layers.weight)) {
    return "--qk_reparam quantizes each head's W_q^T W_k as --qat quantizes weights; set --qat with weights (e.g. w4a4_ofq)";
  }
  return "";
}

// Linear warm-up to the peak, then cosine decay to min_lr_ratio x peak at the last step.
double LearningRate(const Config& c, int64_t step) {
  if (step < c.lr_warmup) return c.m.lr * static_cast<double>(step + 1) / static_cast<double>(c.lr_warmup);
  const int64_t decay_steps = std::max<int64_t>(1, c.steps - c.lr_warmup);
  const double progress = std::min(1.0, static_cast<double>(step - c.lr_warmup) / static_cast<double>(decay_steps));
  const double floor = c.m.lr * c.min_lr_ratio;
  return floor + 0.5 * (c.m.lr - floor) * (1.0 + std::cos(M_PI * progress));
}

// Mean next-character loss (nats) over the fixed validation windows, each rank
// scoring a shard.
double ValLoss(gpt::Gpt& model, const at::Tensor& windows, ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t n = windows.size(0), block = windows.size(1) - 1;
  const int64_t begin = n * pg.Rank() / pg.Size(), end = n * (pg.Rank() + 1) / pg.Size();
  double sum = 0;
  for (int64_t i = begin; i < end; i += 64) {
    const at::Tensor w = windows.narrow(0, i, std::min<int64_t>(64, end - i));
    sum += model->Loss(w.narrow(1, 0, block), w.narrow(1, 1, block)).item<double>() * static_cast<double>(w.size(0));
  }
  model->train();
  at::Tensor total = torch::tensor({sum}, torch::kDouble);
  pg.AllReduce(total)->Wait();
  return total.item<double>() / static_cast<double>(n);
}

// Every setting the ranks must share that no library object compares.
std::vector<std::string> TrainingSettings(const Config& c, const lowbit::sparsity::Sparsifier* sparsifier) {
  std::vector<std::string> lines = {
      absl::StrCat("--n_layer=", c.model.n_layer), absl::StrCat("--n_head=", c.model.n_head),
      absl::StrCat("--n_embd=", c.model.n_embd), absl::StrCat("--block_size=", c.model.block_size),
      absl::StrCat("--dropout=", c.model.dropout), absl::StrCat("--steps=", c.steps),
      absl::StrCat("--batch_size=", c.batch_size), absl::StrCat("--lr_warmup=", c.lr_warmup),
      absl::StrCat("--min_lr_ratio=", c.min_lr_ratio), absl::StrCat("--grad_clip=", c.grad_clip),
      absl::StrCat("--weight_decay=", c.weight_decay), absl::StrCat("--val_windows=", c.val_windows),
      absl::StrCat("vocab_size=", c.model.vocab_size), absl::StrCat("--e2e_qp=", c.e2e_qp), absl::StrCat("--qk_reparam=", c.qk_reparam),
      absl::StrCat("--init_model=", c.init_model)};
  for (const std::string& line : ex::MethodSettings(c.m)) lines.push_back(line);
  if (sparsifier != nullptr) {
    for (const std::string& line : sparsifier->Settings()) lines.push_back("sparsifier: " + line);
  }
  return lines;
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
  ex::ResolveResume(c.m, pg, "gpt");

  const std::string vocab_corpus = absl::GetFlag(FLAGS_vocab_corpus);
  absl::StatusOr<gpt::CharCorpus> corpus = gpt::LoadCharCorpus(
      c.corpus, 0.1,
      vocab_corpus.empty() ? std::vector<std::string>{} : std::vector<std::string>(absl::StrSplit(vocab_corpus, ',')));
  if (!corpus.ok()) {
    std::cerr << "error: " << corpus.status().message() << "\n";
    return 1;
  }
  c.model.vocab_size = corpus->size();
  const at::Tensor val_windows = gpt::ValWindows(*corpus, c.val_windows, c.model.block_size);
  const at::Tensor prompt = gpt::Encode(*corpus, c.prompt);

  torch::manual_seed(c.m.seed);
  gpt::Gpt model(c.model);
  const int64_t parameters = [&] {
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    return n;
  }();
  if (!c.init_model.empty()) torch::load(model, c.init_model);
  if (!c.m.qat.empty()) lowbit::qat::Prepare(*model, ex::QatPreset(c.m, c.steps));
  if (c.qk_reparam) model->EnableQkReparam(*lowbit::qat::PresetConfig(c.m.qat, c.steps).layers.weight);
  if (!c.m.qat.empty() && c.m.resume.empty() && c.m.calibrate) {
    // Initial LSQ steps, PACT alphas and observer ranges from windows that
    // are the same on every rank; a resumed run restores them.
    const at::Tensor w = gpt::TrainWindows(*corpus, 32, c.model.block_size, c.m.seed, /*rank=*/-1, /*step=*/0);
    lowbit::qat::Calibrate(*model, [&] { model->forward(w.narrow(1, 0, c.model.block_size)); });
  }
  // E2E-QP: only the quantizers' steps (and offsets) train.
  std::vector<at::Tensor> trainable;
  if (c.e2e_qp) trainable = lowbit::qat::FreezeLevels(*model);
  int64_t trainable_parameters = 0;
  for (const auto& p : model->parameters()) trainable_parameters += p.requires_grad() ? p.numel() : 0;
  // The starting model's loss: with --init_model and --qat, the loss after
  // quantizing it without training (round to nearest on the initial grid).
  const double init_val_loss = c.init_model.empty() ? 0.0 : ValLoss(model, val_windows, *pg);
  // N:M on the MLP projections only; attention stays dense.
  std::unique_ptr<lowbit::sparsity::Sparsifier> sparsifier;
  if (!c.m.sparsity.empty()) {
    sparsifier = std::make_unique<lowbit::sparsity::Sparsifier>(
        *model, ex::SparsityConfig(c.m.sparsity, c.m.sparsity_steps > 0 ? c.m.sparsity_steps : c.steps),
        std::vector<std::pair<std::string, std::optional<lowbit::sparsity::SparseConfig>>>{{"*.attn.*", std::nullopt}});
  }
  lowbit::comm::CheckSameOnAllRanks(*pg, TrainingSettings(c, sparsifier.get()), "training settings", "gpt");
  lowbit::comm::DistributedDataParallel ddp(model.ptr(), pg, {.bucket_cap_mb = c.m.bucket_cap_mb});
  lowbit::examples::RegisterHook(ddp, pg, c.m, /*print_decisions=*/lead);
  // Weight decay on the matrices and embeddings, not on biases and LayerNorms
  // (nanoGPT's split); 8-bit optimizers keep 32-bit state for the embeddings.
  ex::ParamSets params;
  params.weight_decay = c.weight_decay;
  params.decay_onebit = true;
  for (const auto& p : model->parameters()) {
    if (p.requires_grad()) (p.dim() >= 2 && !c.e2e_qp ? params.decay : params.no_decay).push_back(p);
  }
  lowbit::optim::KeepFp32State(model->wte->weight);
  lowbit::optim::KeepFp32State(model->wpe->weight);
  std::unique_ptr<torch::optim::Optimizer> opt = ex::MakeOptimizer(c.m, params, ddp);
  std::unique_ptr<lowbit::optim::DiLoCo> outer = ex::MakeOuter(c.m, model->parameters(), ddp);
  auto* onebit = dynamic_cast<lowbit::optim::OneBitOptimizer*>(opt.get());
  auto* demo = dynamic_cast<lowbit::optim::DeMo*>(opt.get());
  // --two_level: the bytes that cross hosts are its cross group's.
  auto* two_level = dynamic_cast<lowbit::comm::TwoLevelHook*>(
      outer && outer->options().exchange_hook() ? outer->options().exchange_hook().get() : &ddp.comm_hook());
  const int64_t cross_start = two_level ? two_level->CrossHostTraffic().bytes_sent : 0;
  // The peak rate the schedule scales: --lr, or the 1-bit optimizer's own default.
  c.m.lr = opt->param_groups().front().options().get_lr();

  int64_t step = 0, bytes_sent = 0, skipped_steps = 0;
  auto make_checkpoint = [&](const std::string& dir) {
    lowbit::train::Checkpoint ckpt(dir, pg);
    ckpt.Model(*model).Optimizer("optimizer", *opt).Ddp(ddp).Counter("step", &step).Counter("bytes_sent", &bytes_sent);
    ckpt.Counter("skipped_steps", &skipped_steps);
    if (outer) {
      ckpt.State("diloco", [&](torch::serialize::OutputArchive& a) { outer->Save(a); },
                 [&](torch::serialize::InputArchive& a) { outer->Load(a); });
    }
    if (sparsifier) ckpt.Sparsifier(*sparsifier);
    return ckpt;
  };
  if (!c.m.resume.empty()) make_checkpoint(c.m.resume).Restore();
  std::optional<lowbit::train::Checkpoint> checkpoint;
  if (!c.m.checkpoint.empty()) checkpoint.emplace(make_checkpoint(c.m.checkpoint));
  const int64_t start_step = step;
  const int64_t last_step = c.stop_at > 0 ? c.stop_at : c.steps;

  std::ofstream csv;
  if (lead && !c.m.metrics_csv.empty()) {
    csv.open(c.m.metrics_csv, start_step > 0 ? std::ios::app : std::ios::trunc);
    LOWBIT_CHECK(csv.good(), "--metrics_csv: cannot write ", c.m.metrics_csv);
    if (start_step == 0) csv << "step,train_loss,val_loss,val_bpc,tokens_per_second,bytes_sent,lr,train_seconds,layer_choices\n";
  }
  const int64_t tokens_per_step = c.batch_size * c.model.block_size * world;
  if (lead) {
    std::cout << "gpt: " << parameters << " parameters (" << c.model.n_layer << " layers, " << c.model.n_head
              << " heads, " << c.model.n_embd << " wide, block " << c.model.block_size << ", vocabulary "
              << c.model.vocab_size << "), " << world << " rank(s), backend " << pg->Backend() << ", hook "
              << ddp.comm_hook().Name() << ", optimizer " << c.m.optimizer << (c.m.qat.empty() ? "" : ", qat " + c.m.qat)
              << (c.m.sparsity.empty() ? "" : ", sparsity " + c.m.sparsity) << ", " << c.steps << " steps of "
              << tokens_per_step << " tokens" << std::endl;
  }

  double train_seconds = 0, interval_seconds = 0, interval_loss = 0, train_loss = 0, val_loss = 0;
  double flip_sum = 0;
  // Where the step time goes (summed over this run's steps, this rank).
  double backward_seconds = 0, launch_seconds = 0, wait_seconds = 0;
  int64_t flip_steps = 0, interval_steps = 0, dense_bytes = 0, peak_step_bytes = 0;
  const auto t_start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> all_params = model->parameters();
  while (step < last_step) {
    const auto t_step = std::chrono::steady_clock::now();
    const double lr = LearningRate(c, step);
    ex::SetLearningRate(*opt, lr);
    const at::Tensor w = gpt::TrainWindows(*corpus, c.batch_size, c.model.block_size, c.m.seed, rank, step);
    const int64_t sent_before = pg->Traffic().bytes_sent;
    opt->zero_grad();
    const at::Tensor loss = model->Loss(w.narrow(1, 0, c.model.block_size), w.narrow(1, 1, c.model.block_size));
    const auto t_backward = std::chrono::steady_clock::now();
    loss.backward();
    backward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_backward).count();
    launch_seconds += ddp.LastStepStats().launch_seconds;
    wait_seconds += ddp.LastStepStats().wait_seconds;
    if (ddp.LastStepStats().nonfinite) {
      ++skipped_steps;  // some rank's gradients were NaN/Inf: skip, as AMP's GradScaler does
    } else {
      if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(all_params, c.grad_clip);
      if (sparsifier) {
        sparsifier->Step(*opt);
      } else {
        opt->step();
      }
      if (onebit != nullptr && onebit->LastStepStats().skipped) ++skipped_steps;
      if (demo != nullptr && demo->LastStepStats().skipped) ++skipped_steps;
    }
    if (outer) {
      outer->Step();
      if (outer->LastStepStats().nonfinite) ++skipped_steps;
    }
    if (!c.m.qat.empty()) {
      const double flips = lowbit::qat::MeanFlipFraction(*model);
      if (flips >= 0) {
        flip_sum += flips;
        ++flip_steps;
      }
    }
    const int64_t step_bytes = pg->Traffic().bytes_sent - sent_before;  // DDP's, the optimizer's, the outer method's
    bytes_sent += step_bytes;
    peak_step_bytes = std::max(peak_step_bytes, step_bytes);
    dense_bytes = ddp.LastStepStats().dense_bytes;
    interval_loss += loss.item<double>();
    ++interval_steps;
    ++step;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count();
    train_seconds += seconds;
    interval_seconds += seconds;

    if (step % c.eval_interval == 0 || step == last_step) {
      at::Tensor mean = torch::tensor({interval_loss / static_cast<double>(interval_steps)}, torch::kDouble);
      pg->AllReduce(mean, lowbit::comm::ReduceOp::kAvg)->Wait();
      train_loss = mean.item<double>();
      val_loss = ValLoss(model, val_windows, *pg);
      const double tokens_per_second = static_cast<double>(tokens_per_step * interval_steps) / interval_seconds;
      if (lead) {
        std::cout << "step " << step << "/" << c.steps << "  train " << std::fixed << std::setprecision(4) << train_loss
                  << "  val " << val_loss << " (" << std::setprecision(3) << val_loss / std::log(2.0)
                  << " bits/char)  tokens/s " << std::setprecision(0) << tokens_per_second << "  MB sent/rank "
                  << std::setprecision(1) << static_cast<double>(bytes_sent) / 1e6 << "  lr " << std::scientific
                  << std::setprecision(2) << lr << std::defaultfloat << std::endl;
        if (csv.is_open()) {
          csv << step << "," << train_loss << "," << val_loss << "," << val_loss / std::log(2.0) << ","
              << tokens_per_second << "," << bytes_sent << "," << lr << "," << train_seconds << ","
              << ex::LayerChoices(ddp) << "\n";
          csv.flush();
        }
      }
      interval_loss = 0;
      interval_steps = 0;
      interval_seconds = 0;
      if (checkpoint) checkpoint->Save();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const std::string checksum = ex::ParamChecksum(*model);
  const int64_t run_steps = step - start_step;
  if (lead && c.sample_chars > 0) {
    const at::Tensor sample = gpt::Sample(model, prompt, c.sample_chars, c.temperature, c.m.seed);
    std::cout << "--- sample (seed " << c.m.seed << ", temperature " << c.temperature << ") ---\n"
              << c.prompt << gpt::Decode(*corpus, sample) << "\n--- end of sample ---" << std::endl;
  }
  if (lead && !c.save_model.empty()) torch::save(model, c.save_model);
  // ComPEFT of the task vector (this model - --compeft_base), each rank the
  // same (the models are identical); rank 0 writes the files.
  std::string compeft_json;
  if (const std::string base_path = absl::GetFlag(FLAGS_compeft_base); !base_path.empty()) {
    int64_t dense_bytes_fp32 = 0;
    for (const auto& p : model->parameters()) dense_bytes_fp32 += p.numel() * 4;
    compeft_json = absl::StrCat(",\"task_vector_fp32_bytes\":", dense_bytes_fp32, ",\"compeft\":[");
    const double finetuned_loss = val_loss;
    bool first = true;
    const std::vector<std::string> densities = absl::StrSplit(absl::GetFlag(FLAGS_compeft_densities), ',');
    const std::vector<std::string> alphas = absl::StrSplit(absl::GetFlag(FLAGS_compeft_alphas), ',');
    for (const std::string& d : densities) {
      for (const std::string& a : alphas) {
        lowbit::compress::ComPeftOptions o;
        LOWBIT_CHECK(absl::SimpleAtod(d, &o.density) && absl::SimpleAtod(a, &o.alpha),
                    "--compeft_densities / --compeft_alphas: '", d, "', '", a, "' are not numbers");
        gpt::Gpt base(c.model);
        torch::load(base, base_path);
        const std::string file = absl::StrCat(base_path, ".r", rank, ".d", d, ".a", a, ".lbtv");
        const int64_t bytes = lowbit::compress::SaveTaskVector(*model, *base, o, file);
        lowbit::compress::ApplyTaskVector(*base, file);
        const double loss = ValLoss(base, val_windows, *pg);
        absl::StrAppend(&compeft_json, first ? "" : ",", "{\"density\":", o.density, ",\"alpha\":", o.alpha,
                        ",\"bytes\":", bytes, ",\"val_loss\":", loss, "}");
        first = false;
      }
    }
    compeft_json += "]";
    val_loss = finetuned_loss;
  }
  if (lead) {
    const int64_t steps_done = std::max<int64_t>(step, 1);
    const double steps_run = static_cast<double>(std::max<int64_t>(run_steps, 1));
    std::cout << std::setprecision(6) << std::defaultfloat;
    std::cout << "{\"example\":\"gpt\",\"val_loss\":" << val_loss << ",\"val_bpc\":" << val_loss / std::log(2.0)
              << ",\"train_loss\":" << train_loss << ",\"steps\":" << step << ",\"world_size\":" << world
              << ",\"backend\":\"" << pg->Backend() << "\",\"hook\":\"" << ddp.comm_hook().Name()
              << "\",\"outer\":\"" << c.m.outer << "\",\"sync_every\":" << (c.m.outer.empty() ? 0 : c.m.sync_every)
              << ",\"fragments\":" << (c.m.outer.empty() ? 0 : c.m.fragments) << ",\"fragment_delay\":"
              << c.m.fragment_delay << ",\"merge_alpha\":" << c.m.merge_alpha << ",\"outer_lr\":" << c.m.outer_lr
              << ",\"outer_momentum\":" << c.m.outer_momentum << ",\"peak_bytes_per_step\":" << peak_step_bytes
              << ",\"outer_working_bytes\":" << (outer ? outer->WorkingBytes() : 0) << ",\"two_level\":\""
              << (two_level ? absl::StrCat(two_level->hosts(), "x", two_level->ranks_per_host()) : "")
              << "\",\"cross_host_bytes_per_step\":"
              << (two_level ? (two_level->CrossHostTraffic().bytes_sent - cross_start) / std::max<int64_t>(run_steps, 1)
                            : bytes_sent / steps_done)
              << ",\"optimizer\":\"" << c.m.optimizer << "\",\"qat\":\"" << c.m.qat << "\",\"sparsity\":\""
              << c.m.sparsity << "\",\"preset\":\"" << c.preset << "\",\"parameters\":" << parameters
              << ",\"n_layer\":" << c.model.n_layer << ",\"n_head\":" << c.model.n_head << ",\"n_embd\":"
              << c.model.n_embd << ",\"block_size\":" << c.model.block_size << ",\"batch_size\":" << c.batch_size
              << ",\"seed\":" << c.m.seed << ",\"threads\":" << c.m.threads << ",\"tokens_per_second\":"
              << (train_seconds > 0 ? static_cast<double>(tokens_per_step * run_steps) / train_seconds : 0.0)
              << ",\"seconds\":" << seconds << ",\"backward_seconds_per_step\":" << backward_seconds / steps_run
              << ",\"hook_launch_seconds_per_step\":" << launch_seconds / steps_run
              << ",\"comm_wait_seconds_per_step\":" << wait_seconds / steps_run << ",\"bytes_sent_per_step\":" << bytes_sent / steps_done
              << ",\"dense_bytes_per_step\":" << dense_bytes << ",\"compression_ratio\":"
              << static_cast<double>(dense_bytes) / static_cast<double>(std::max<int64_t>(1, bytes_sent / steps_done))
              << ",\"skipped_steps\":" << skipped_steps << ",\"hook_config\":\"" << ddp.comm_hook().Config()
              << "\",\"layer_choices\":\"" << ex::LayerChoices(ddp) << "\",\"optimizer_state_bytes_per_param\":"
              << ex::StateBytesPerParam(*opt) << ",\"weight_flip_fraction\":"
              << (flip_steps > 0 ? flip_sum / static_cast<double>(flip_steps) : -1.0) << ",\"weight_sparsity\":"
              << ex::WeightSparsity(*model) << ",\"frozen_weight_fraction\":" << lowbit::qat::MeanFrozenFraction(*model)
              << ",\"trainable_parameters\":" << trainable_parameters << ",\"init_val_loss\":" << init_val_loss
              << compeft_json << ",\"param_checksum\":\"" << checksum << "\"}" << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Config c;
  c.preset = absl::GetFlag(FLAGS_preset);
  if (c.preset == "tiny" || c.preset == "medium" || c.preset == "small") c.model = gpt::GptPreset(c.preset);
  if (ex::FlagSet("n_layer")) c.model.n_layer = absl::GetFlag(FLAGS_n_layer);
  if (ex::FlagSet("n_head")) c.model.n_head = absl::GetFlag(FLAGS_n_head);
  if (ex::FlagSet("n_embd")) c.model.n_embd = absl::GetFlag(FLAGS_n_embd);
  if (ex::FlagSet("block_size")) c.model.block_size = absl::GetFlag(FLAGS_block_size);
  c.model.dropout = absl::GetFlag(FLAGS_dropout);
  c.corpus = absl::GetFlag(FLAGS_corpus);
  c.prompt = absl::GetFlag(FLAGS_prompt);
  c.steps = absl::GetFlag(FLAGS_steps);
  c.init_model = absl::GetFlag(FLAGS_init_model);
  c.save_model = absl::GetFlag(FLAGS_save_model);
  c.e2e_qp = absl::GetFlag(FLAGS_e2e_qp);
  c.qk_reparam = absl::GetFlag(FLAGS_qk_reparam);
  c.stop_at = absl::GetFlag(FLAGS_stop_at);
  c.batch_size = absl::GetFlag(FLAGS_batch_size);
  c.lr_warmup = absl::GetFlag(FLAGS_lr_warmup);
  c.eval_interval = absl::GetFlag(FLAGS_eval_interval);
  c.val_windows = absl::GetFlag(FLAGS_val_windows);
  c.sample_chars = absl::GetFlag(FLAGS_sample_chars);
  c.min_lr_ratio = absl::GetFlag(FLAGS_min_lr_ratio);
  c.grad_clip = absl::GetFlag(FLAGS_grad_clip);
  c.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  c.temperature = absl::GetFlag(FLAGS_temperature);
  c.m = ex::MethodsFromFlags(absl::GetFlag(FLAGS_optimizer), absl::GetFlag(FLAGS_sparsity), 1e-3);
  c.m.total_steps = c.steps;
  c.m.lr_warmup_steps = c.lr_warmup;
  c.m.model_width = c.model.n_embd;
  return lowbit::examples::RunMain(ValidateFlags(c), [&] { return Run(c); });
}
