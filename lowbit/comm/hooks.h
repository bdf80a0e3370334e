// MakeCommHook: the DDP comm hooks by name, with defaults that train well.
//
//   HookSpec spec;
//   spec.name = "onebit";                 // 1-bit, two-phase, error feedback
//   ddp.RegisterCommHook(MakeCommHook(pg, spec));
//
// | name      | what                                        | default ef |
// |-----------|---------------------------------------------|------------|
// | allreduce | uncompressed mean allreduce (also "none")   | -          |
// | fp16/bf16 | cast, allreduce                             | none       |
// | qsgd      | `bits`-bit QSGD, allgather                  | ef         |
// | ternary   | TernGrad {-s, 0, s}, allgather              | ef         |
// | onebit    | sign + per-block scale, allgather           | ef         |
//
// qsgd, ternary and onebit also run DeepSpeed's two-phase compressed
// allreduce (exchange = "twophase"), which sends less on large worlds but
// compresses twice; on Fashion-MNIST it cost accuracy (see the README).
// | topk      | top-k / DGC, allgather                      | ef         |
// | randomk   | random-k with shared indices, allreduce     | ef         |
// | powersgd  | PowerSGD rank `rank`                        | (built in) |
//
// adaptive_powersgd, adaptive_topk and adaptive_qsgd choose the rank, the
// density or the bits per layer with L-GreCo (comm/adaptive_hook.h), around
// `rank`, `density` or `bits`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/comm/comm_hook.h"

namespace lowbit::comm {

struct HookSpec {
  std::string name = "allreduce";
  // none, ef, ef21, econtrol; empty: the hook's default.
  std::string error_feedback;
  double ef_eta = 0.1;
  // auto (the compressor's default), allreduce, allgather, twophase.
  std::string exchange = "auto";
  int bits = 4;             // qsgd
  // qsgd, ternary: "stochastic" (unbiased) or "nearest" rounding; empty:
  // qsgd stochastic, ternary nearest (with error feedback, nearest trained
  // better: see the README).
  std::string rounding;
  // onebit: 2 (RMS, DeepSpeed's) or 1 (mean |x|) per-block scale.
  int scale_norm = 2;
  // Elements per scale; 0: the hook's default (256).
  int64_t block = 0;
  double density = 0.01;    // topk, randomk
  int rank = 4;             // powersgd
  int64_t min_compress_numel = 1024;
  bool compress_1d = false;
  uint64_t seed = 0;
  // topk (Deep Gradient Compression)
  double momentum = 0.0;
  double clip_norm = 0.0;
  double sample_ratio = 0.0;
  int64_t warmup_steps = 0;
  // Uncompressed allreduce for the first `start_iter` steps (as PowerSGD and
  // 1-bit Adam's warm-up); -1: the hook's default (powersgd 10, others 0).
  int64_t start_iter = -1;
  // powersgd
  bool warm_start = true;
  double min_compression_rate = 2.0;
  // adaptive_*: decide every `adapt_period` steps on gradients summed over
  // `adapt_window` steps, within alpha x the uniform default's error.
  int64_t adapt_period = 100;
  int64_t adapt_window = 10;
  double adapt_alpha = 1.0;
  // Empty: DefaultCandidates around rank / density / bits. An empty list is
  // an error.
  std::optional<std::vector<double>> adapt_candidates;
  // "pattern=value,pattern=plain,...": per-parameter overrides (fnmatch
  // patterns), tried before the small-tensor rule.
  std::string adapt_overrides;
  // Called when a decision changes a layer (see AdaptiveOptions::on_change).
  std::function<void(int64_t step, const std::string& summary)> on_adapt;
};

std::shared_ptr<CommHook> MakeCommHook(std::shared_ptr<ProcessGroup> pg, const HookSpec& spec);

}  // namespace lowbit::comm
