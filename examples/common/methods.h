// The lowbit methods every example trains with, from one set of flags: the
// gradient exchange (--hook and its settings), the optimizer (fp32, 8-bit,
// 1-bit), QAT presets, sparse-training modes, the launch and checkpoint
// flags. The Fashion-MNIST and GPT examples share them, so a method is asked
// for the same way on both workloads. Each example keeps the flags whose
// default or meaning is its own (--optimizer, --sparsity, the data, the
// schedule).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/flags/declare.h"
#include "lowbit/compress/registry.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn
namespace torch::optim {
class Optimizer;
}  // namespace torch::optim
namespace lowbit::comm {
class DistributedDataParallel;
class ProcessGroup;
}  // namespace lowbit::comm
namespace lowbit::sparsity {
struct SparseConfig;
}  // namespace lowbit::sparsity
namespace lowbit::optim {
class DiLoCo;
}  // namespace lowbit::optim
namespace lowbit::qat {
struct QatConfig;
}  // namespace lowbit::qat

ABSL_DECLARE_FLAG(double, lr);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int64_t, percentile_clipping);
ABSL_DECLARE_FLAG(int64_t, freeze_step);
ABSL_DECLARE_FLAG(int64_t, onebit_block);
ABSL_DECLARE_FLAG(int64_t, var_update_scaler);
ABSL_DECLARE_FLAG(int64_t, local_step_scaler);
ABSL_DECLARE_FLAG(int64_t, local_step_clipper);
ABSL_DECLARE_FLAG(std::string, hook);
ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(std::string, metrics_csv);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(std::string, checkpoint);
ABSL_DECLARE_FLAG(std::string, resume);
ABSL_DECLARE_FLAG(double, bucket_cap_mb);
ABSL_DECLARE_FLAG(std::string, qat);
ABSL_DECLARE_FLAG(int64_t, sparsity_steps);

namespace lowbit::examples {

// The shared flags' values, plus the example's --optimizer and --sparsity.
struct Methods {
  double lr = 1e-3;
  bool lr_given = false;  // --lr was set; else the example's default, or a 1-bit optimizer's own
  uint64_t seed = 1;
  std::string optimizer, hook, backend, metrics_csv, checkpoint, resume, qat, sparsity;
  compress::HookSettings hook_settings;
  int threads = 1;
  double bucket_cap_mb = 25.0;
  int64_t percentile_clipping = 100, sparsity_steps = 0;
  // --outer diloco and its settings; empty: no outer method.
  std::string outer;
  bool two_level = false;
  int ranks_per_host = 0;
  int64_t sync_every = 50, fragments = 1, fragment_delay = 0;
  double outer_lr = 0.7, outer_momentum = 0.9, merge_alpha = 0.0;
  double dead_zone_lambda = -1;  // --dead_zone_lambda; -1: the preset's
  double dkm_temperature = -1;   // --dkm_temperature; -1: the preset's
  bool calibrate = true;         // --calibrate: qat::Calibrate before training
  // The run's optimizer steps, for defaults that are a fraction of the run (1-bit Adam's
  // warm-up); 0: the example does not say, and those take their measured fixed values.
  int64_t total_steps = 0;
  // The learning-rate schedule's warm-up in optimizer steps (the GPT's --lr_warmup), for the 1-bit
  // optimizers' automatic warm-up, which ends 10 steps after it; 0: none (Fashion-MNIST's constant rate).
  int64_t lr_warmup_steps = 0;
  // The model's width (the GPT's n_embd, Fashion-MNIST's 32 conv channels), for
  // defaults that are a fraction of it (PowerSGD's rank under the momentum
  // exchange: width / 8); 0: unknown, and those take a fixed value.
  int64_t model_width = 0;
  bool compress_gradients = false;  // --compress_gradients
};

// Reads the shared flags; `default_lr` stands in for --lr when it was not given.
Methods MethodsFromFlags(const std::string& optimizer, const std::string& sparsity, double default_lr);

// Whether --name was given a value other than its default.
bool FlagSet(const char* name);

bool IsOneBit(const std::string& optimizer);
// The 1-bit optimizers and DeMo: they exchange what they need themselves.
bool OwnsExchange(const std::string& optimizer);
// --hook onebit, ternary, topk, powersgd, adaptive_topk or adaptive_powersgd
// under --optimizer adam or adamw (without --compress_gradients, --outer or
// --two_level): MakeOptimizer builds a lowbit::optim::OneBitAdam (decoupled
// weight decay for adamw, none for adam) whose exchange of the momentum is the hook's
// codec, and RegisterHook registers nothing. Error feedback on gradients
// does not survive Adam's normalisation (docs/gpt.md measures both).
bool MomentumExchange(const Methods& m);
// "sgd, sgd0, adam, ..., onebit_lamb": the --optimizer values.
const std::vector<std::string>& OptimizerNames();

// The first flag value that parses but makes no sense, as "--flag must be
// ..., got ...", else empty. Checks the hook and its settings too (a key the
// hook does not take, or a value out of range, names both), before any rank
// starts.
std::string ValidateMethods(const Methods& m);

// Parameters and weight decay. Optimizers with decoupled weight decay (adamw,
// adamw8bit, the 1-bit ones when decay_onebit) apply `weight_decay` to
// `decay` only; `no_decay` (biases, norms) never decays. The other
// optimizers take both without weight decay.
struct ParamSets {
  std::vector<at::Tensor> decay, no_decay;
  double weight_decay = 1e-4;
  bool decay_onebit = false;
};

// The optimizer --optimizer names. The 1-bit optimizers take over DDP's
// communication; flags left at their defaults give the optimizer's own
// defaults (docs/optimizers.md), not the example's.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const Methods& m, const ParamSets& params,
                                                       comm::DistributedDataParallel& ddp);

// --hook with its settings over `pg`; with --two_level, inside a
// comm::TwoLevelHook (the hook across hosts).
std::shared_ptr<comm::CommHook> MakeExchange(const Methods& m, std::shared_ptr<comm::ProcessGroup> pg,
                                            compress::AdaptCallback on_adapt = {});

// --outer's method over `params` (null when --outer is empty). It takes over
// DDP's hook; --hook then names the exchange of its pseudo-gradient.
std::unique_ptr<optim::DiLoCo> MakeOuter(const Methods& m, const std::vector<at::Tensor>& params,
                                         comm::DistributedDataParallel& ddp);

// Registers --hook with its settings on `ddp` (nothing with --outer); with print_decisions, the
// adaptive hooks' per-layer decisions are printed as "L-GreCo step N: ...".
void RegisterHook(comm::DistributedDataParallel& ddp, std::shared_ptr<comm::ProcessGroup> pg, const Methods& m,
                  bool print_decisions);

// --qat's preset for a run of total_steps optimizer steps (qat::PresetConfig),
// with --dead_zone_lambda and --dkm_temperature applied.
lowbit::qat::QatConfig QatPreset(const Methods& m, int64_t total_steps);

// Sets every parameter group's learning rate (schedules).
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

// --sparsity's settings for a run of total_steps optimizer steps: 2:4_srste,
// 4:8_srste, 2:4_pgf or gmp90. SR-STE (Zhou et al. 2021) recomputes masks
// every step with lambda 2e-4; PGF steps 4:4 -> 3:4 -> 2:4 and decays beta
// over the first half; GMP (Zhu & Gupta 2017) prunes from 10% to 70% of the
// run, about 20 mask updates.
sparsity::SparseConfig SparsityConfig(const std::string& mode, int64_t total_steps);
bool IsKnownSparsity(const std::string& mode);

// Fraction of exact zeros in the parameters with two or more dimensions.
double WeightSparsity(torch::nn::Module& model);
// FNV-1a over every parameter's bytes, in registration order, as 16 hex digits.
std::string ParamChecksum(torch::nn::Module& model);
// For the PyTorch peers' model check (bench/peers): writes DIR/params.bin
// (every parameter as float32, in named_parameters order) and DIR/names.txt
// (a line "name d0xd1x..." each); returns the parameter count.
int64_t WriteParametersForPeer(torch::nn::Module& model, const std::string& dir);
// The adaptive hooks' per-layer settings ("name=value;..."), else empty.
std::string LayerChoices(comm::DistributedDataParallel& ddp);
// 8-bit optimizers: state bytes per parameter element (fp32 Adam: 8), else 0.
double StateBytesPerParam(torch::optim::Optimizer& optimizer);

// main's end: with `invalid` non-empty prints "error: <invalid>" and returns
// 2; else returns run(), or 1 with "error: <message>" (without LibTorch's
// C++ backtrace) when it throws.
int RunMain(const std::string& invalid, const std::function<int()>& run);

// The settings every rank must share that no library object compares.
std::vector<std::string> MethodSettings(const Methods& m);

// --resume auto (collective): m.resume becomes m.checkpoint when every rank
// sees a complete checkpoint there, "" (a fresh start) when none does; an
// error when --checkpoint is unset or only some ranks see one. Rank 0 says
// which. Any other --resume is left as it is.
void ResolveResume(Methods& m, const std::shared_ptr<comm::ProcessGroup>& pg, const char* example);

// This process's resident memory, threads and open file descriptors (from
// /proc/self; zeros where it is missing), for --report_resources.
struct ResourceUsage {
  int64_t rss_kb = 0;
  int64_t threads = 0;
  int64_t open_files = 0;
};
ResourceUsage ReadResourceUsage();

}  // namespace lowbit::examples
