#include "examples/common/methods.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"
#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/comm/two_level_hook.h"
#include "lowbit/compress/adaptive_hook.h"
#include "lowbit/compress/defaults.h"
#include "lowbit/launch/init.h"
#include "lowbit/optimizers/demo.h"
#include "lowbit/optimizers/diloco.h"
#include "lowbit/optimizers/onebit_adam.h"
#include "lowbit/optimizers/onebit_lamb.h"
#include "lowbit/optimizers/optim_8bit.h"
#include "lowbit/optimizers/spam.h"
#include "lowbit/optimizers/zero_one_adam.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparse_config.h"
#include "lowbit/train/checkpoint.h"

namespace defaults = lowbit::compress::defaults;

ABSL_FLAG(double, lr, -1,
          "peak learning rate (-1: the example's default, or the 1-bit optimizer's own: 1-bit LAMB 1e-2; under "
          "--outer diloco/streaming_diloco 4x the example's default)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the initialisation, the data order and the hooks' randomness");
ABSL_FLAG(int64_t, percentile_clipping, 100, "8-bit optimizers and lion: clip gradients at this percentile of the last 100 norms (100: off)");
ABSL_FLAG(std::string, outer, "",
          "low-communication training: diloco (local steps, the pseudo-gradient averaged every --sync_every "
          "steps through --hook, then Nesterov outer SGD), streaming_diloco (the same in --fragments fragments "
          "synced in turn, each exchange overlapping --fragment_delay steps), sparseloco (top-k of an error-feedback "
          "buffer at 2 bits instead of the outer momentum); empty: every step exchanges gradients");
ABSL_FLAG(int64_t, sync_every, -1,
          "--outer: inner steps between synchronisations (H; -1: diloco 10, streaming_diloco 25, sparseloco 50)");
ABSL_FLAG(double, outer_lr, -1,
          "--outer: the outer learning rate (-1: diloco 0.5, streaming_diloco 0.7, sparseloco 1)");
ABSL_FLAG(double, outer_momentum, 0.9, "--outer diloco/streaming_diloco: the outer Nesterov momentum");
ABSL_FLAG(int64_t, fragments, -1, "--outer: fragments synced in turn (-1: diloco and sparseloco 1, streaming_diloco 4)");
ABSL_FLAG(int64_t, fragment_delay, -1,
          "--outer: inner steps a fragment's exchange overlaps (tau; -1: diloco and sparseloco 0, streaming_diloco 1)");
ABSL_FLAG(double, merge_alpha, -1,
          "--outer: the local copy's weight when a fragment lands (-1: diloco and sparseloco 0, streaming_diloco 0.5)");
ABSL_FLAG(bool, two_level, false,
          "multi-host jobs: average inside each host uncompressed first, then send one shard per rank across hosts "
          "through --hook (or --outer's exchange)");
ABSL_FLAG(int, ranks_per_host, 0,
          "--two_level: hosts are blocks of this many consecutive ranks (0: the ranks that share memory)");
ABSL_FLAG(int64_t, chunk, 4096, "--outer sparseloco: elements per top-k chunk");
ABSL_FLAG(int64_t, topk, 64, "--outer sparseloco: entries kept per chunk; --optimizer demo: DCT coefficients per tile");
ABSL_FLAG(double, decay, 0.95, "--outer sparseloco: the error-feedback buffer's decay");
ABSL_FLAG(double, range_sigmas, 6.0, "--outer sparseloco: the bins span mean +- this many standard deviations");
ABSL_FLAG(int64_t, demo_chunk, 64, "--optimizer demo: the DCT tile side");
ABSL_FLAG(double, demo_beta, 0.999, "--optimizer demo: the momentum's decay");
ABSL_FLAG(int64_t, reset_interval, -1,
          "--optimizer spam|stable_spam|stable_spam8bit: steps between momentum resets (0: never; -1: the method's "
          "own, 500 for SPAM and 1000 for Stable-SPAM)");
ABSL_FLAG(int64_t, freeze_step, -1,
          "onebit_adam/onebit_lamb: uncompressed warm-up steps; zeroone_adam: the last variance refresh "
          "(var_freeze_step); -1: 10 steps past the example's learning-rate warm-up (the GPT's --lr_warmup), "
          "else 10% of the run");
ABSL_FLAG(int64_t, var_refresh, -1,
          "onebit_adam and the momentum exchange: after the warm-up, refresh the variance from averaged gradients "
          "every this many steps (0: never; -1: the default, never)");
ABSL_FLAG(int64_t, onebit_block, -1,
          "1-bit optimizers: elements per 1-bit scale (0: one per exchange chunk; -1: the optimizer's default)");
ABSL_FLAG(std::string, codec, "",
          "onebit_adam/zeroone_adam/onebit_lamb: the compressed exchange of the momentum, a --hook spec "
          "(topk:density=0.01, ternary, powersgd:rank=8; empty: the built-in 1-bit two-phase allreduce)");
ABSL_FLAG(
    bool, compress_gradients, false,
    "--hook onebit/ternary/topk/powersgd under --optimizer adam or adamw: compress the gradients (error feedback on "
    "gradients, which Adam's normalisation undoes: docs/gpt.md) instead of the momentum");
ABSL_FLAG(bool, local_momentum, false,
          "onebit_adam: each rank keeps its own momentum after the warm-up (for --codec topk/powersgd)");
ABSL_FLAG(int64_t, var_update_scaler, -1, "zeroone_adam: variance refreshes per interval doubling (kappa; -1: default)");
ABSL_FLAG(int64_t, local_step_scaler, -1,
          "zeroone_adam: local-phase steps per doubling of the sync interval (-1: default)");
ABSL_FLAG(int64_t, local_step_clipper, -1, "zeroone_adam: the longest sync interval (H; -1: default)");
ABSL_FLAG(std::string, hook, "",
          "gradient exchange (empty: allreduce, or the method's default below): none or allreduce (uncompressed), "
          "fp16, bf16, qsgd, onebit, topk, randomk, powersgd, "
          "ternary, adaptive_powersgd, adaptive_topk, adaptive_qsgd (L-GreCo: per-layer rank, density or bits); "
          "with a 1-bit optimizer, the exchange of its averaging (warm-up) steps (empty: fp16); with --outer, "
          "of the pseudo-gradient (empty: diloco qsgd 2-bit, streaming_diloco qsgd 4-bit)");
ABSL_FLAG(std::string, ef, "", "error feedback: none, ef, ef21, econtrol (empty: the hook's default)");
ABSL_FLAG(double, ef_eta, defaults::kEfEta, "EControl error weight; must be about the kept fraction or less");
ABSL_FLAG(std::string, exchange, "auto", "collective of qsgd/ternary/onebit: auto, twophase or allgather");
ABSL_FLAG(int, bits, -1, "qsgd bits per element, 1-8 (-1: the hook's own, 4; under --outer diloco's default qsgd 2)");
ABSL_FLAG(int, scale_norm, defaults::kOneBitScaleNorm, "onebit scale per block: 2 = RMS (DeepSpeed), 1 = mean |g|");
ABSL_FLAG(std::string, rounding, "", "qsgd/ternary: stochastic or nearest (empty: qsgd stochastic, ternary nearest)");
ABSL_FLAG(int64_t, block, defaults::kBlock, "qsgd/ternary/onebit elements per scale");
ABSL_FLAG(double, density, -1,
          "topk/randomk/compeft fraction of elements sent, in (0, 1] (-1: the hook's default, topk 0.01, randomk 0.1, "
          "compeft 0.05)");
ABSL_FLAG(double, alpha, 1.0, "--hook compeft: each tensor's kept entries are +-alpha * its standard deviation");
ABSL_FLAG(int, rank, -1,
          "powersgd rank (-1: the hook's own, 4; under adam/adamw --hook powersgd's momentum exchange the model's "
          "width / 8)");
ABSL_FLAG(int64_t, start_iter, -1, "uncompressed steps first (-1: powersgd 10, others 0)");
ABSL_FLAG(bool, warm_start, true, "powersgd: reuse Q across steps");
ABSL_FLAG(double, min_compression_rate, defaults::kMinCompressionRate, "powersgd: compress a matrix only if it shrinks this much");
ABSL_FLAG(double, momentum_correction, 0.0, "topk (DGC): momentum correction factor; use with --optimizer sgd0");
ABSL_FLAG(double, clip_norm, 0.0, "topk (DGC): local gradient clipping norm (0: off)");
ABSL_FLAG(double, sample_ratio, 0.0, "topk (DGC): threshold from this fraction of |g| (0: exact top-k)");
ABSL_FLAG(int64_t, warmup_steps, -1, "topk (DGC): density warm-up steps (-1: the hook's default, topk 200)");
ABSL_FLAG(int64_t, min_compress_numel, -1,
          "smaller tensors are sent uncompressed (-1: the hook's default, 1024; topk 8192)");
ABSL_FLAG(bool, compress_1d, false, "also compress 1-D tensors (biases)");
ABSL_FLAG(std::string, plain, "",
          "compression hooks: the tensors sent uncompressed (small, 1-D) go as fp32 or fp16 (empty: the hook's "
          "default, fp32; under adam/adamw --hook topk's momentum exchange fp16)");
ABSL_FLAG(int64_t, adapt_period, defaults::kAdaptPeriod, "adaptive_*: steps between per-layer decisions");
ABSL_FLAG(int64_t, adapt_window, defaults::kAdaptWindow, "adaptive_*: steps of gradients summed for each decision (<= period)");
ABSL_FLAG(double, adapt_alpha, defaults::kAdaptAlpha, "adaptive_*: error budget as a multiple of the uniform setting's error");
ABSL_FLAG(std::string, adapt_candidates, "auto",
          "adaptive_*: comma-separated ranks, densities or bits to choose from (auto: around --rank/--density/--bits)");
ABSL_FLAG(std::string, adapt_overrides, "",
          "adaptive_*: per-parameter settings, e.g. 'fc2.*=plain,conv2.weight=0.05' (fnmatch patterns)");
ABSL_FLAG(std::string, backend, "auto", "process group: auto, mpi, gloo, nccl or local");
ABSL_FLAG(std::string, metrics_csv, "", "if set, rank 0 writes one CSV row per evaluation here");
ABSL_FLAG(int, threads, 1, "intra-op threads per rank");
ABSL_FLAG(std::string, checkpoint, "", "if set, a directory: save model, optimizer, hook state, masks, progress and RNG there");
ABSL_FLAG(std::string, resume, "",
          "if set, continue from this checkpoint directory; 'auto': from --checkpoint's latest complete "
          "checkpoint, or a fresh start when it has none (for restarting launchers: torchrun --max_restarts, a "
          "loop around mpirun)");
ABSL_FLAG(double, bucket_cap_mb, 25.0, "DDP bucket size in MB");
ABSL_FLAG(std::string, qat, "",
          "quantization-aware or low-bit training: w8a8, w4a8, w4a4_lsq, w2a2_lsq, w4a4_quest, w2a2_quest, "
          "w1a1_quest, w4a4_ofq, w2a2_ofq, ternary_ste, ternary_tequila, w4_lsq, w3_lsq, w2_lsq, dkm4, dkm3, dkm2, "
          "int8_train, fp8_train (empty: fp32)");
ABSL_FLAG(bool, calibrate, true,
          "--qat: run qat::Calibrate on the first 256 training examples before training (false: each quantizer "
          "initializes from the first training batch it sees; DDP then gives every rank rank 0's values)");
ABSL_FLAG(double, dkm_temperature, -1,
          "--qat dkm2|dkm3|dkm4: DKM's temperature relative to the weights' std (-1: the preset's, 0.05)");
ABSL_FLAG(double, dead_zone_lambda, -1,
          "--qat ternary_tequila: lambda of Tequila's dead-zone bias (-1: the preset's, 1e-3)");
ABSL_FLAG(int64_t, sparsity_steps, 0,
          "optimizer steps the --sparsity schedules (PGF, GMP) span (0: this run's; a run stopped for --resume "
          "sets the whole run's)");

namespace lowbit::examples {
namespace {

// The hook's settings from the flags: every registry key whose flag (the key
// itself, or --ef and --momentum_correction) was set to something other
// than its default. The training seed also seeds the hook.
compress::HookSettings HookSettingsFromFlags(const std::string& hook, uint64_t seed) {
  compress::HookSettings settings;
  std::set<std::string> keys;
  for (const compress::HookInfo& info : compress::HookRegistry()) {
    for (const compress::HookSetting& s : info.settings) keys.insert(s.key);
  }
  for (const std::string& key : keys) {
    const std::string flag = key == "error_feedback" ? "ef" : key == "momentum" ? "momentum_correction" : key;
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(flag);
    if (f == nullptr || key == "seed") continue;
    if (FlagSet(flag.c_str())) settings.emplace_back(key, f->CurrentValue());
  }
  const std::vector<compress::HookInfo>& all = compress::HookRegistry();
  const bool known = std::any_of(all.begin(), all.end(), [&](const auto& h) { return h.name == hook; });
  if (known && compress::FindHook(hook).Find("seed") != nullptr) settings.emplace_back("seed", std::to_string(seed));
  return settings;
}

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  }
  return out;
}

// Two parameter groups, `decay` with weight_decay and `no_decay` with none
// (an empty group is left out).
template <typename Options>
std::vector<torch::optim::OptimizerParamGroup> Groups(const ParamSets& p, Options options) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!p.decay.empty()) {
    Options d = options;
    d.weight_decay(p.weight_decay);
    groups.emplace_back(p.decay, std::make_unique<Options>(d));
  }
  if (!p.no_decay.empty()) {
    Options n = options;
    n.weight_decay(0.0);
    groups.emplace_back(p.no_decay, std::make_unique<Options>(n));
  }
  return groups;
}

}  // namespace

// PowerSGD's rank under the momentum exchange is the model's width over this,
// or the fallback where the example gives no width (docs/gpt.md).
constexpr int64_t kWidthPerPowerSgdRank = 8;
constexpr int64_t kFallbackPowerSgdRank = 16;

// Under --outer diloco/streaming_diloco the inner rate's default is this times
// the example's: each rank drifts alone between syncs, and 4e-3 to 6e-3 beat
// DDP's 1e-3 on the GPT by 6 to 11 points (docs/low_communication.md).
constexpr double kOuterInnerLrScale = 4.0;

bool FlagSet(const char* name) {
  const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
  return f != nullptr && f->CurrentValue() != f->DefaultValue();
}

Methods MethodsFromFlags(const std::string& optimizer, const std::string& sparsity, double default_lr) {
  Methods m;
  m.lr = absl::GetFlag(FLAGS_lr);
  m.lr_given = m.lr != -1;
  if (!m.lr_given) m.lr = default_lr;
  m.seed = absl::GetFlag(FLAGS_seed);
  m.optimizer = optimizer;
  m.sparsity = sparsity;
  // Empty flags stand for the method's default, so that an explicit value
  // equal to the flag's default (--hook allreduce) is never replaced.
  const bool hook_given = !absl::GetFlag(FLAGS_hook).empty();
  m.hook = hook_given ? absl::GetFlag(FLAGS_hook) : "allreduce";
  m.backend = absl::GetFlag(FLAGS_backend);
  m.metrics_csv = absl::GetFlag(FLAGS_metrics_csv);
  m.checkpoint = absl::GetFlag(FLAGS_checkpoint);
  m.resume = absl::GetFlag(FLAGS_resume);
  m.qat = absl::GetFlag(FLAGS_qat);
  m.calibrate = absl::GetFlag(FLAGS_calibrate);
  m.dead_zone_lambda = absl::GetFlag(FLAGS_dead_zone_lambda);
  m.dkm_temperature = absl::GetFlag(FLAGS_dkm_temperature);
  m.threads = absl::GetFlag(FLAGS_threads);
  m.bucket_cap_mb = absl::GetFlag(FLAGS_bucket_cap_mb);
  m.percentile_clipping = absl::GetFlag(FLAGS_percentile_clipping);
  m.sparsity_steps = absl::GetFlag(FLAGS_sparsity_steps);
  m.outer = absl::GetFlag(FLAGS_outer);
  // SparseLoCo's exchange is its own hook; --chunk, --topk, --bits, --decay
  // and --range_sigmas reach it as its settings.
  if (m.outer == "sparseloco") m.hook = "sparseloco";
  // The 1-bit optimizers' warm-up averages fp16 gradients unless --hook says
  // (DeepSpeed's; fp32 would be most of their bytes: docs/gpt.md).
  if (IsOneBit(optimizer) && !hook_given) m.hook = "fp16";
  const bool diloco = m.outer == "diloco" || m.outer == "streaming_diloco";
  // DiLoCo's pseudo-gradient goes through QSGD with error feedback unless --hook says (docs/low_communication.md).
  if (diloco && !hook_given) m.hook = "qsgd";
  m.hook_settings = HookSettingsFromFlags(m.hook, m.seed);
  if (m.outer == "diloco" && !hook_given && !FlagSet("bits")) m.hook_settings.emplace_back("bits", "2");
  if (diloco && !m.lr_given) m.lr = kOuterInnerLrScale * default_lr;
  m.compress_gradients = absl::GetFlag(FLAGS_compress_gradients);
  m.two_level = absl::GetFlag(FLAGS_two_level);
  m.ranks_per_host = absl::GetFlag(FLAGS_ranks_per_host);
  m.sync_every = absl::GetFlag(FLAGS_sync_every);
  if (m.sync_every == -1) m.sync_every = m.outer == "diloco" ? 10 : m.outer == "streaming_diloco" ? 25 : 50;
  // DiLoCo at H=10 on the GPT: outer lr 0.5 +0.3%, 0.7 +2.1%, 1.0 +23% (docs/low_communication.md).
  m.outer_lr = absl::GetFlag(FLAGS_outer_lr);
  if (m.outer_lr == -1) m.outer_lr = m.outer == "diloco" ? 0.5 : m.outer == "sparseloco" ? 1.0 : 0.7;
  m.outer_momentum = absl::GetFlag(FLAGS_outer_momentum);
  const bool streaming = m.outer == "streaming_diloco";
  m.fragments = FlagSet("fragments") ? absl::GetFlag(FLAGS_fragments) : streaming ? 4 : 1;
  m.fragment_delay = FlagSet("fragment_delay") ? absl::GetFlag(FLAGS_fragment_delay) : streaming ? 1 : 0;
  m.merge_alpha = FlagSet("merge_alpha") ? absl::GetFlag(FLAGS_merge_alpha) : streaming ? 0.5 : 0.0;
  if (m.outer == "sparseloco") {
    if (!FlagSet("outer_momentum")) m.outer_momentum = 0.0;
  }
  return m;
}

bool IsOneBit(const std::string& optimizer) {
  return optimizer == "onebit_adam" || optimizer == "zeroone_adam" || optimizer == "onebit_lamb";
}

bool OwnsExchange(const std::string& optimizer) { return IsOneBit(optimizer) || optimizer == "demo"; }

namespace {

// The codec and momentum mode of --hook's momentum exchange under AdamW (MomentumExchange).
struct MomentumCodec {
  std::string codec;  // empty: 1-bit Adam's built-in two-phase exchange
  bool local_momentum = false;
};

std::string Spec(const std::string& hook, compress::HookSettings settings,
                 const std::vector<std::pair<std::string, std::string>>& fallback) {
  for (const auto& [key, value] : fallback) {
    if (std::none_of(settings.begin(), settings.end(), [&](const auto& kv) { return kv.first == key; })) {
      settings.emplace_back(key, value);
    }
  }
  std::string spec = hook;
  for (size_t i = 0; i < settings.size(); ++i) {
    absl::StrAppend(&spec, i == 0 ? ":" : ",", settings[i].first, "=", settings[i].second);
  }
  return spec;
}

// PowerSGD's rank under the momentum exchange: the model's width / 8, else 16.
int64_t MomentumPowerSgdRank(const Methods& m) {
  return m.model_width > 0 ? std::max<int64_t>(1, m.model_width / kWidthPerPowerSgdRank) : kFallbackPowerSgdRank;
}

MomentumCodec MomentumCodecFor(const Methods& m) {
  // onebit: 1-bit Adam's own exchange, unless a setting asks for the hook's (allgather, per-block scales, EF21...).
  const bool only_seed =
      std::all_of(m.hook_settings.begin(), m.hook_settings.end(), [](const auto& kv) { return kv.first == "seed"; });
  if (m.hook == "onebit" && only_seed) return {};
  if (m.hook == "onebit") return {Spec(m.hook, m.hook_settings, {}), false};
  if (m.hook == "ternary") return {Spec(m.hook, m.hook_settings, {}), false};
  // Sparse and low-rank messages would zero most of a shared momentum each step: each rank keeps its own.
  if (m.hook == "topk" || m.hook == "adaptive_topk") {
    // The tensors under min_compress_numel go dense: as fp16, where they are most of top-k's bytes
    // (Fashion-MNIST's conv2 and fc2: docs/fashion_mnist.md).
    return {Spec(m.hook, m.hook_settings, {{"warmup_steps", "0"}, {"plain", "fp16"}}), true};
  }
  // powersgd and L-GreCo's adaptive_powersgd: rank width / 8 (16 on GPT tiny, where rank 4 lost 17%;
  // 32 on the 256-wide medium preset, where 16 lost 4.7% by step 400: docs/gpt.md) unless --rank says; L-GreCo
  // chooses per layer around it.
  return {Spec(m.hook, m.hook_settings, {{"rank", std::to_string(MomentumPowerSgdRank(m))}, {"start_iter", "0"}}),
          true};
}

// --freeze_step, else 10 steps past the learning rate's warm-up when the example has one (the GPT),
// else 10% of the run when the example gives its length, else the fixed fallback (the Fashion-MNIST
// example's measured warm-up), without the notice.
void SetFreezeStep(const Methods& m, optim::OneBitAdamOptions& o) {
  o.total_steps(m.total_steps).lr_warmup_steps(m.lr_warmup_steps);
  if (FlagSet("var_refresh")) o.var_refresh(absl::GetFlag(FLAGS_var_refresh));
  if (FlagSet("freeze_step")) {
    o.freeze_step(absl::GetFlag(FLAGS_freeze_step));
  } else if (m.total_steps == 0 && m.lr_warmup_steps == 0) {
    o.freeze_step(optim::kFallbackFreezeStep);
  }
}

}  // namespace

namespace {

// --hook and --optimizer are a pair whose hook may carry AdamW's momentum.
bool MomentumCodecApplies(const Methods& m) {
  // adaptive_qsgd stays a gradient hook, as qsgd: a 4-bit gradient holds under AdamW (docs/gpt.md).
  static const std::set<std::string> kHooks = {"onebit",   "ternary",       "topk",
                                               "powersgd", "adaptive_topk", "adaptive_powersgd"};
  return (m.optimizer == "adam" || m.optimizer == "adamw") && kHooks.count(m.hook) > 0 && m.outer.empty() &&
         !m.two_level;
}

}  // namespace

bool MomentumExchange(const Methods& m) { return MomentumCodecApplies(m) && !m.compress_gradients; }

const std::vector<std::string>& OptimizerNames() {
  static const std::vector<std::string> names = {
      "sgd",      "sgd0",        "adam",         "adamw",       "lion",        "rmsprop",
      "adagrad",  "adam8bit",    "adamw8bit",    "sgd8bit",     "lion8bit",    "rmsprop8bit",
      "adagrad8bit", "onebit_adam", "zeroone_adam", "onebit_lamb", "demo", "spam", "stable_spam", "stable_spam8bit"};
  return names;
}

bool IsKnownSparsity(const std::string& mode) {
  return mode == "2:4_srste" || mode == "4:8_srste" || mode == "2:4_pgf" || mode == "gmp90";
}

std::string ValidateMethods(const Methods& m) {
  if (!(m.lr > 0)) return absl::StrCat("--lr must be > 0, got ", m.lr);
  if (m.threads < 1) return absl::StrCat("--threads must be >= 1, got ", m.threads);
  if (!(m.bucket_cap_mb > 0)) return absl::StrCat("--bucket_cap_mb must be > 0, got ", m.bucket_cap_mb);
  const std::vector<std::string>& optimizers = OptimizerNames();
  if (std::find(optimizers.begin(), optimizers.end(), m.optimizer) == optimizers.end()) {
    return absl::StrCat("--optimizer must be ", Joined(optimizers), ", got '", m.optimizer, "'");
  }
  if (!m.qat.empty()) {
    const std::vector<std::string> presets = qat::PresetNames();
    if (std::find(presets.begin(), presets.end(), m.qat) == presets.end()) {
      std::string known;
      for (const auto& p : presets) known += (known.empty() ? "" : ", ") + p;
      return absl::StrCat("--qat must be empty (fp32) or one of ", known, ", got '", m.qat, "'");
    }
  }
  if (!m.sparsity.empty() && !IsKnownSparsity(m.sparsity)) {
    return absl::StrCat("--sparsity must be empty (dense) or one of 2:4_srste, 4:8_srste, 2:4_pgf, gmp90, got '",
                        m.sparsity, "'");
  }
  if (m.sparsity_steps < 0) return absl::StrCat("--sparsity_steps must be >= 0, got ", m.sparsity_steps);
  if (m.percentile_clipping < 1 || m.percentile_clipping > 100) {
    return absl::StrCat("--percentile_clipping must be in [1, 100], got ", m.percentile_clipping);
  }
  if (!m.outer.empty() && m.outer != "diloco" && m.outer != "streaming_diloco" && m.outer != "sparseloco") {
    return absl::StrCat("--outer must be empty, diloco, streaming_diloco or sparseloco, got '", m.outer, "'",
                        m.outer == "demo" ? " (DeMo is an optimizer: --optimizer demo)" : "");
  }
  if (m.outer == "sparseloco") {
    const std::string given = absl::GetFlag(FLAGS_hook);
    if (FlagSet("hook") && given != "allreduce" && given != "none" && given != "sparseloco") {
      return absl::StrCat("--outer sparseloco sends through its own exchange (top-k of the error-feedback buffer, ",
                          "a few bits each); --hook ", given, " would replace it: leave --hook out");
    }
    if (m.outer_momentum != 0.0) {
      return absl::StrCat("--outer sparseloco has no outer momentum (its error-feedback buffer stands in for it); "
                          "--outer_momentum must be 0, got ", m.outer_momentum);
    }
  }
  if (m.optimizer == "demo" && m.hook != "allreduce" && m.hook != "none") {
    return absl::StrCat("--optimizer demo sends its own top-k DCT coefficients every step; --hook ", m.hook,
                        " would compress nothing: leave --hook out");
  }
  if (FlagSet("codec") && !IsOneBit(m.optimizer)) {
    return absl::StrCat(
        "--codec is the momentum exchange of onebit_adam, zeroone_adam or onebit_lamb; --optimizer ", m.optimizer,
        " has none (under adam or adamw, --hook onebit|ternary|topk|powersgd|adaptive_topk|adaptive_powersgd ",
        "picks the codec)");
  }
  if (FlagSet("var_refresh") && m.optimizer != "onebit_adam" && !MomentumExchange(m)) {
    return absl::StrCat("--var_refresh is 1-bit Adam's variance refresh: it needs --optimizer onebit_adam, or --hook ",
                        "onebit|ternary|topk|powersgd|adaptive_topk|adaptive_powersgd under adam or adamw; got ",
                        "--optimizer ", m.optimizer, " --hook ", m.hook);
  }
  if (FlagSet("local_momentum") && m.optimizer != "onebit_adam") {
    return absl::StrCat("--local_momentum needs --optimizer onebit_adam, got ", m.optimizer);
  }
  if (m.compress_gradients && !MomentumCodecApplies(m)) {
    return absl::StrCat(
        "--compress_gradients keeps --hook onebit|ternary|topk|powersgd|adaptive_topk|adaptive_powersgd on the ",
        "gradients under ", "--optimizer adam or adamw (without --outer or --two_level); with --optimizer ",
        m.optimizer, " and --hook ", m.hook, " the gradients are what is compressed already");
  }
  if (m.ranks_per_host < 0) return absl::StrCat("--ranks_per_host must be >= 0, got ", m.ranks_per_host);
  if (FlagSet("ranks_per_host") && !m.two_level) return "--ranks_per_host needs --two_level";
  if (m.two_level && OwnsExchange(m.optimizer)) {
    return absl::StrCat("--two_level wraps --hook or --outer's exchange; --optimizer ", m.optimizer,
                        " does its own exchange");
  }
  if (m.sync_every < 1) return absl::StrCat("--sync_every must be >= 1, got ", m.sync_every);
  if (m.fragments < 1) return absl::StrCat("--fragments must be >= 1, got ", m.fragments);
  if (m.fragment_delay < 0) return absl::StrCat("--fragment_delay must be >= 0, got ", m.fragment_delay);
  if (!(m.merge_alpha >= 0 && m.merge_alpha <= 1)) return absl::StrCat("--merge_alpha must be in [0, 1], got ", m.merge_alpha);
  if (m.outer.empty() && (FlagSet("fragments") || FlagSet("fragment_delay") || FlagSet("merge_alpha"))) {
    return "--fragments, --fragment_delay and --merge_alpha need --outer";
  }
  if (!m.outer.empty() && m.fragments > m.sync_every) {
    return absl::StrCat("--fragments (", m.fragments, ") must be <= --sync_every (", m.sync_every,
                        "): the fragments sync one at a time, each once every --sync_every steps");
  }
  if (!m.outer.empty() && m.fragment_delay >= m.sync_every / m.fragments) {
    return absl::StrCat("--fragment_delay must be < --sync_every / --fragments = ", m.sync_every / m.fragments,
                        " (a fragment lands before the next starts), got ", m.fragment_delay);
  }
  if (!m.outer.empty() && OwnsExchange(m.optimizer)) {
    return absl::StrCat("--outer ", m.outer, " needs an ordinary inner optimizer; --optimizer ", m.optimizer,
                        " does its own exchange");
  }
  if (!(m.outer_lr > 0)) return absl::StrCat("--outer_lr must be > 0, got ", m.outer_lr);
  if (!(m.outer_momentum >= 0 && m.outer_momentum < 1)) {
    return absl::StrCat("--outer_momentum must be in [0, 1), got ", m.outer_momentum);
  }
  if (FlagSet("dkm_temperature") && !(m.dkm_temperature > 0)) {
    return absl::StrCat("--dkm_temperature must be > 0, got ", m.dkm_temperature);
  }
  if (FlagSet("dead_zone_lambda") && !(m.dead_zone_lambda >= 0)) {
    return absl::StrCat("--dead_zone_lambda must be >= 0, got ", m.dead_zone_lambda);
  }
  if (FlagSet("reset_interval") && absl::GetFlag(FLAGS_reset_interval) < 0) {
    return absl::StrCat("--reset_interval must be >= 0 (0: never), got ", absl::GetFlag(FLAGS_reset_interval));
  }
  if (FlagSet("freeze_step") && absl::GetFlag(FLAGS_freeze_step) < 0) {
    return absl::StrCat("--freeze_step must be >= 0, got ", absl::GetFlag(FLAGS_freeze_step));
  }
  if (!launch::ParseBackend(m.backend).ok()) {
    return absl::StrCat("--backend must be auto, mpi, gloo, nccl or local, got '", m.backend, "'");
  }
  try {
    compress::MakeCommHook(std::make_shared<comm::LocalProcessGroup>(), m.hook, m.hook_settings);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

namespace {

// Prints a 1-bit optimizer's resolved settings (its warm-up, schedule and
// exchanges: the first line of Config()) on rank 0, and hands it on.
template <typename Optimizer>
std::unique_ptr<torch::optim::Optimizer> Announced(std::unique_ptr<Optimizer> opt, comm::DistributedDataParallel& ddp) {
  if (ddp.shared_process_group()->Rank() == 0) {
    const std::string& config = opt->Config();
    std::cout << "optimizer: " << config.substr(0, config.find('\n')) << std::endl;
  }
  return opt;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const Methods& m, const ParamSets& p,
                                                       comm::DistributedDataParallel& ddp) {
  namespace lo = lowbit::optim;
  std::vector<at::Tensor> all = p.decay;
  all.insert(all.end(), p.no_decay.begin(), p.no_decay.end());
  ParamSets onebit = p;
  if (!p.decay_onebit) onebit.weight_decay = 0.0;
  // Under a 1-bit optimizer --hook is the exchange of its averaging steps
  // (allreduce: its own fp32 mean allreduce).
  std::shared_ptr<comm::CommHook> averaging;
  if (IsOneBit(m.optimizer) && m.hook != "allreduce" && m.hook != "none") {
    averaging = compress::MakeCommHook(ddp.shared_process_group(), m.hook, m.hook_settings);
  }
  if (MomentumExchange(m)) {
    // --hook X under Adam or AdamW: the momentum goes through X's codec after a
    // warm-up (10 steps past the learning rate's, or 10% of the run) on 4-bit (QSGD, error feedback) averaged gradients.
    // adam: no weight decay, as torch::optim::Adam's default below.
    const MomentumCodec mc = MomentumCodecFor(m);
    const bool lowrank = m.hook == "powersgd" || m.hook == "adaptive_powersgd";
    if (lowrank && m.model_width == 0 && !FlagSet("rank") && ddp.shared_process_group()->Rank() == 0) {
      std::cout << "notice: --hook " << m.hook << ": the example gives no model width, so the momentum exchange's "
                << "PowerSGD rank is " << kFallbackPowerSgdRank << " (width / " << kWidthPerPowerSgdRank
                << " when it does); --rank sets it" << std::endl;
    }
    lo::OneBitAdamOptions o(m.lr);
    o.codec(mc.codec).local_momentum(mc.local_momentum).decoupled_weight_decay(m.optimizer == "adamw");
    SetFreezeStep(m, o);
    o.averaging_hook(
        compress::MakeCommHook(ddp.shared_process_group(), "qsgd", {{"bits", "4"}, {"seed", std::to_string(m.seed)}}));
    ParamSets q = p;
    if (m.optimizer == "adam") q.weight_decay = 0.0;
    auto opt = std::make_unique<lo::OneBitAdam>(Groups(q, o), ddp, o);
    if (absl::StartsWith(m.hook, "adaptive_")) {
      const bool print = ddp.shared_process_group()->Rank() == 0;
      opt->OnCodecAdapt([print](int64_t step, const std::string& changes) {
        if (print) std::cout << "L-GreCo step " << step << ": " << changes << std::endl;
      });
    }
    if (ddp.shared_process_group()->Rank() == 0) {
      std::cout << "--hook " << m.hook << " under " << m.optimizer << ": " << (m.optimizer == "adam" ? "Adam" : "AdamW")
                << "'s momentum is exchanged through "
                << (mc.codec.empty() ? "1-bit Adam's two-phase 1-bit allreduce" : mc.codec)
                << (mc.local_momentum ? " (each rank keeping its own momentum)" : "")
                << " after a warm-up on 4-bit averaged gradients (lowbit::optim::OneBitAdam; "
                   "--compress_gradients compresses the gradients instead)"
                << std::endl;
    }
    return Announced(std::move(opt), ddp);
  }
  if (m.optimizer == "onebit_adam") {
    lo::OneBitAdamOptions o;
    o.codec(absl::GetFlag(FLAGS_codec));
    o.local_momentum(absl::GetFlag(FLAGS_local_momentum));
    if (m.lr_given) o.lr(m.lr);
    o.averaging_hook(averaging);
    SetFreezeStep(m, o);
    if (FlagSet("onebit_block")) o.block(absl::GetFlag(FLAGS_onebit_block));
    if (onebit.weight_decay > 0) o.decoupled_weight_decay(true);
    return Announced(std::make_unique<lo::OneBitAdam>(Groups(onebit, o), ddp, o), ddp);
  }
  if (m.optimizer == "zeroone_adam") {
    lo::ZeroOneAdamOptions o;
    o.codec(absl::GetFlag(FLAGS_codec));
    if (m.lr_given) o.lr(m.lr);
    o.averaging_hook(averaging);
    // As SetFreezeStep: the run's length when the example gives it, else the fixed fallbacks (given
    // explicitly here only to keep the library's notice quiet; the other two fall back by themselves).
    o.total_steps(m.total_steps).lr_warmup_steps(m.lr_warmup_steps);
    if (FlagSet("freeze_step")) {
      o.var_freeze_step(absl::GetFlag(FLAGS_freeze_step));
    } else if (m.total_steps == 0 && m.lr_warmup_steps == 0) {
      o.var_freeze_step(optim::kFallbackFreezeStep);
    }
    if (FlagSet("var_update_scaler")) o.var_update_scaler(absl::GetFlag(FLAGS_var_update_scaler));
    if (FlagSet("local_step_scaler")) o.local_step_scaler(absl::GetFlag(FLAGS_local_step_scaler));
    if (FlagSet("local_step_clipper")) o.local_step_clipper(absl::GetFlag(FLAGS_local_step_clipper));
    if (FlagSet("onebit_block")) o.block(absl::GetFlag(FLAGS_onebit_block));
    if (onebit.weight_decay > 0) o.decoupled_weight_decay(true);
    return Announced(std::make_unique<lo::ZeroOneAdam>(Groups(onebit, o), ddp, o), ddp);
  }
  if (m.optimizer == "demo") {
    lo::DeMoOptions o(m.lr);
    o.topk(FlagSet("topk") ? absl::GetFlag(FLAGS_topk) : 32).chunk(absl::GetFlag(FLAGS_demo_chunk));
    o.beta(absl::GetFlag(FLAGS_demo_beta));
    return std::make_unique<lo::DeMo>(Groups(p, o), ddp, o);
  }
  if (m.optimizer == "onebit_lamb") {
    lo::OneBitLambOptions o;
    o.codec(absl::GetFlag(FLAGS_codec));
    if (m.lr_given) o.lr(m.lr);
    o.averaging_hook(averaging);
    if (FlagSet("freeze_step")) o.freeze_step(absl::GetFlag(FLAGS_freeze_step));
    if (FlagSet("onebit_block")) o.block(absl::GetFlag(FLAGS_onebit_block));
    return Announced(std::make_unique<lo::OneBitLamb>(Groups(onebit, o), ddp, o), ddp);
  }
  // 8-bit optimizers: the same hyper-parameters as their fp32 counterparts below.
  const int64_t pc = m.percentile_clipping;
  if (m.optimizer == "adam8bit") return std::make_unique<lo::Adam8bit>(all, lo::Adam8bitOptions(m.lr).percentile_clipping(pc));
  if (m.optimizer == "adamw8bit") {
    return std::make_unique<lo::AdamW8bit>(Groups(p, lo::AdamW8bitOptions(m.lr).percentile_clipping(pc)),
                                           lo::AdamW8bitOptions(m.lr).percentile_clipping(pc));
  }
  if (m.optimizer == "sgd8bit") {
    return std::make_unique<lo::SGD8bit>(all, lo::SGD8bitOptions(m.lr).momentum(0.9).percentile_clipping(pc));
  }
  if (m.optimizer == "lion8bit" || m.optimizer == "lion") {
    // lion: the same optimizer with fp32 state for every parameter (LibTorch has no Lion).
    const int64_t min_8bit = m.optimizer == "lion" ? std::numeric_limits<int64_t>::max() : 4096;
    return std::make_unique<lo::Lion8bit>(all, lo::Lion8bitOptions(m.lr).min_8bit_size(min_8bit).percentile_clipping(pc));
  }
  if (m.optimizer == "rmsprop8bit") {
    return std::make_unique<lo::RMSprop8bit>(all, lo::RMSprop8bitOptions(m.lr).percentile_clipping(pc));
  }
  if (m.optimizer == "rmsprop") return std::make_unique<torch::optim::RMSprop>(all, torch::optim::RMSpropOptions(m.lr));
  if (m.optimizer == "adagrad8bit") {
    return std::make_unique<lo::Adagrad8bit>(all, lo::Adagrad8bitOptions(m.lr).percentile_clipping(pc));
  }
  if (m.optimizer == "adagrad") return std::make_unique<torch::optim::Adagrad>(all, torch::optim::AdagradOptions(m.lr));
  if (m.optimizer == "sgd" || m.optimizer == "sgd0") {
    return std::make_unique<torch::optim::SGD>(all, torch::optim::SGDOptions(m.lr).momentum(m.optimizer == "sgd" ? 0.9 : 0.0));
  }
  if (m.optimizer == "spam" || m.optimizer == "stable_spam" || m.optimizer == "stable_spam8bit") {
    lo::SpamOptions o = m.optimizer == "spam" ? lo::SpamOptions(m.lr) : lo::SpamOptions::StableSpam(m.lr);
    if (m.optimizer == "stable_spam8bit") o.state_bits(8);
    if (FlagSet("reset_interval")) o.reset_interval(absl::GetFlag(FLAGS_reset_interval));
    if (o.warmup_steps() >= o.reset_interval() && o.reset_interval() > 0) o.warmup_steps(o.reset_interval() / 2);
    return std::make_unique<lo::Spam>(Groups(p, o), o);
  }
  if (m.optimizer == "adamw") {
    torch::optim::AdamWOptions o(m.lr);
    return std::make_unique<torch::optim::AdamW>(Groups(p, o), o);
  }
  return std::make_unique<torch::optim::Adam>(all, torch::optim::AdamOptions(m.lr));
}

std::shared_ptr<comm::CommHook> MakeExchange(const Methods& m, std::shared_ptr<comm::ProcessGroup> pg,
                                            compress::AdaptCallback on_adapt) {
  if (!m.two_level) return compress::MakeCommHook(pg, m.hook, m.hook_settings, on_adapt);
  return std::make_shared<comm::TwoLevelHook>(
      pg,
      [&](std::shared_ptr<comm::ProcessGroup> cross) {
        return compress::MakeCommHook(cross, m.hook, m.hook_settings, on_adapt);
      },
      m.ranks_per_host);
}

std::unique_ptr<optim::DiLoCo> MakeOuter(const Methods& m, const std::vector<at::Tensor>& params,
                                         comm::DistributedDataParallel& ddp) {
  if (m.outer.empty()) return nullptr;
  optim::DiLoCoOptions o;
  o.sync_every(m.sync_every).outer_lr(m.outer_lr).outer_momentum(m.outer_momentum);
  o.fragments(m.fragments).fragment_delay(m.fragment_delay).merge_alpha(m.merge_alpha);
  if (m.two_level || (m.hook != "allreduce" && m.hook != "none")) o.exchange_hook(MakeExchange(m, ddp.shared_process_group()));
  if (ddp.shared_process_group()->Rank() == 0) {
    std::cout << "--outer " << m.outer << ": sync every " << m.sync_every << " steps";
    if (m.fragments > 1)
      std::cout << " in " << m.fragments << " fragments (delay " << m.fragment_delay << ", alpha " << m.merge_alpha
                << ")";
    std::cout << ", inner lr " << m.lr << ", outer lr " << m.outer_lr << " (Nesterov " << m.outer_momentum
              << "), pseudo-gradient through "
              << (o.exchange_hook() ? o.exchange_hook()->Config() : std::string("a fp32 allreduce")) << std::endl;
  }
  return std::make_unique<optim::DiLoCo>(params, ddp, o);
}

void RegisterHook(comm::DistributedDataParallel& ddp, std::shared_ptr<comm::ProcessGroup> pg, const Methods& m,
                  bool print_decisions) {
  if (!m.outer.empty()) return;  // the outer method owns the exchange (MakeOuter)
  // The 1-bit optimizers take --hook as their averaging hook (MakeOptimizer) and register their own;
  // under AdamW, --hook's codec may carry the momentum instead (MomentumExchange).
  if (OwnsExchange(m.optimizer) || MomentumExchange(m)) return;
  compress::AdaptCallback on_adapt;
  if (print_decisions) {
    on_adapt = [](int64_t step, const std::string& changes) {
      std::cout << "L-GreCo step " << step << ": " << changes << std::endl;
    };
  }
  ddp.RegisterCommHook(MakeExchange(m, pg, on_adapt));
}

lowbit::qat::QatConfig QatPreset(const Methods& m, int64_t total_steps) {
  lowbit::qat::QatConfig c = lowbit::qat::PresetConfig(m.qat, total_steps);
  auto apply = [&](std::optional<lowbit::qat::QuantizerConfig>& w) {
    if (!w) return;
    if (m.dead_zone_lambda >= 0 && w->dead_zone_bias) w->dead_zone_lambda = m.dead_zone_lambda;
    if (m.dkm_temperature > 0 && w->estimator == lowbit::qat::Estimator::kDkm) w->dkm_temperature = m.dkm_temperature;
  };
  apply(c.layers.weight);
  if (c.first_last) apply(c.first_last->weight);
  return c;
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (torch::optim::OptimizerParamGroup& g : optimizer.param_groups()) g.options().set_lr(lr);
}

sparsity::SparseConfig SparsityConfig(const std::string& mode, int64_t total_steps) {
  sparsity::SparseConfig c;
  if (mode == "4:8_srste") {
    c.n = 4;
    c.m = 8;
  } else if (mode == "2:4_pgf") {
    c.method = sparsity::Method::kPgf;
    c.end_step = total_steps / 2;
  } else if (mode == "gmp90") {
    const int64_t start = total_steps / 10, end = total_steps * 7 / 10;
    c = sparsity::GmpConfig(0.9, start, end, std::max<int64_t>(1, (end - start) / 20), /*global=*/true);
  }
  return c;
}

double WeightSparsity(torch::nn::Module& model) {
  int64_t zeros = 0, total = 0;
  for (const auto& p : model.named_parameters()) {
    if (p.value().dim() < 2) continue;
    zeros += (p.value() == 0).sum().item<int64_t>();
    total += p.value().numel();
  }
  return total > 0 ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

int64_t WriteParametersForPeer(torch::nn::Module& model, const std::string& dir) {
  std::ofstream params(dir + "/params.bin", std::ios::binary), names(dir + "/names.txt");
  int64_t total = 0;
  for (const auto& item : model.named_parameters()) {
    const at::Tensor p = item.value().contiguous();
    params.write(static_cast<const char*>(p.data_ptr()), static_cast<std::streamsize>(p.numel() * 4));
    names << item.key() << " ";
    for (int64_t d = 0; d < p.dim(); ++d) names << (d ? "x" : "") << p.size(d);
    names << "\n";
    total += p.numel();
  }
  LOWBIT_CHECK(params.good() && names.good(), "cannot write the parameters to ", dir);
  return total;
}

std::string ParamChecksum(torch::nn::Module& model) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& p : model.parameters()) {
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

std::string LayerChoices(comm::DistributedDataParallel& ddp) {
  const auto* adaptive = dynamic_cast<const compress::AdaptiveHook*>(&ddp.comm_hook());
  return adaptive ? adaptive->ChoicesString() : "";
}

double StateBytesPerParam(torch::optim::Optimizer& optimizer) {
  if (auto* eight = dynamic_cast<optim::Blockwise8bitOptimizer*>(&optimizer)) {
    return static_cast<double>(eight->StateBytes()) / std::max<int64_t>(1, eight->StateElements());
  }
  if (auto* spam = dynamic_cast<optim::Spam*>(&optimizer)) {
    int64_t n = 0;
    for (const auto& g : spam->param_groups()) {
      for (const at::Tensor& p : g.params()) n += p.numel();
    }
    return static_cast<double>(spam->StateBytes()) / std::max<int64_t>(1, n);
  }
  return 0.0;
}

int RunMain(const std::string& invalid, const std::function<int()>& run) {
  if (!invalid.empty()) {
    std::cerr << "error: " << invalid << "\n";
    return 2;
  }
  try {
    return run();
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

void ResolveResume(Methods& m, const std::shared_ptr<comm::ProcessGroup>& pg, const char* example) {
  if (m.resume != "auto") return;
  LOWBIT_CHECK(!m.checkpoint.empty(), example,
              ": --resume auto continues from --checkpoint's directory; set --checkpoint DIR as well");
  const train::Checkpoint probe(m.checkpoint, pg);
  m.resume = probe.Found() ? m.checkpoint : "";
  if (pg->Rank() == 0) {
    std::cout << example << ": --resume auto: "
              << (m.resume.empty() ? "no checkpoint in " + m.checkpoint + ", starting fresh"
                                   : "continuing from " + m.checkpoint)
              << std::endl;
  }
}

ResourceUsage ReadResourceUsage() {
  ResourceUsage u;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "VmRSS:") fields >> u.rss_kb;
    if (key == "Threads:") fields >> u.threads;
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++u.open_files;
  }
  return u;
}

std::vector<std::string> MethodSettings(const Methods& m) {
  return {absl::StrCat("--lr=", m.lr),
          absl::StrCat("--seed=", m.seed),
          absl::StrCat("--optimizer=", m.optimizer),
          absl::StrCat("--percentile_clipping=", m.percentile_clipping),
          absl::StrCat("--qat=", m.qat),
          absl::StrCat("--sparsity=", m.sparsity),
          absl::StrCat("--sparsity_steps=", m.sparsity_steps),
          absl::StrCat("--outer=", m.outer, ",sync_every=", m.sync_every, ",outer_lr=", m.outer_lr,
                       ",outer_momentum=", m.outer_momentum, ",fragments=", m.fragments,
                       ",fragment_delay=", m.fragment_delay, ",merge_alpha=", m.merge_alpha),
          absl::StrCat("--two_level=", m.two_level, ",ranks_per_host=", m.ranks_per_host),
          absl::StrCat("--dead_zone_lambda=", m.dead_zone_lambda, ",dkm_temperature=", m.dkm_temperature)};
}

}  // namespace lowbit::examples
