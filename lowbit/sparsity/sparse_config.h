// What a sparsified layer does: the mask's pattern (N:M along the input
// dimension, unstructured or block magnitude), how training treats the
// pruned weights (hard masking, SR-STE or progressive gradient flow) and
// when masks are recomputed. sparsity/sparsifier.h applies it to a model;
// the formulas are in ../shared/design.md (sparsity/).
//
//   SparseConfig c;                          // 2:4 with SR-STE, masks every step
//   SparseConfig gmp = GmpConfig(0.9, /*start=*/100, /*end=*/1500, /*every=*/50);
//   CheckSparseConfig(c, "fc1");             // errors name the field and the value
#pragma once

#include <cstdint>
#include <string>

namespace lowbit::sparsity {

enum class Pattern {
  kNm,            // n of every m consecutive weights along the input dimension
  kUnstructured,  // the smallest magnitudes of the whole tensor
  kBlock,         // blocks of block_rows x block_cols of the [out, fan_in] view, by L1 norm
};

enum class Method {
  // Pruned weights are zero and get no gradient (one-shot masks, as NVIDIA's
  // ASP; with a schedule, gradual magnitude pruning, Zhu & Gupta 2017).
  kHard,
  // Sparse-refined STE (Zhou et al. 2021, eq. 6): dense weights W are kept,
  // forward uses W * mask, and W's gradient is dL/d(W*mask) + lambda (1 - mask) W.
  kSrSte,
  // Progressive gradient flow (Bambhaniya et al. 2024): dense W kept, forward
  // uses W * (mask + (1 - mask) beta_t), beta_t decaying linearly from
  // pgf_beta0 to 0 over [start_step, end_step]; W's gradient is the chain
  // rule through that factor; N:M steps from m:m (dense) down to n:m in
  // m - n + 1 equal stages of the same interval.
  kPgf,
};

struct SparseConfig {
  Pattern pattern = Pattern::kNm;
  int64_t n = 2, m = 4;
  // kUnstructured, kBlock: the fraction of zeros, reached at end_step when
  // end_step > start_step (the cubic schedule), else from the start.
  double sparsity = 0.5;
  int64_t block_rows = 1, block_cols = 4;
  // kUnstructured: one magnitude threshold across every layer with this set
  // (global magnitude pruning, as torch.nn.utils.prune.global_unstructured):
  // the fraction holds over their weights together, so layers with larger
  // weights (small fan-in) keep more. Their configs must be the same.
  bool global = false;
  Method method = Method::kSrSte;
  double srste_lambda = 2e-4;
  double pgf_beta0 = 1.0;
  // Masks are recomputed at optimizer steps that are multiples of this (for
  // kHard with a schedule, only within [start_step, end_step]).
  int64_t update_every = 1;
  // Schedule: GMP's s_t = s_f + (s_0 - s_f)(1 - (t - t0) / (end - t0))^3
  // from initial_sparsity at start_step to sparsity at end_step; PGF's decay.
  double initial_sparsity = 0.0;
  int64_t start_step = 0, end_step = 0;
};

// Gradual magnitude pruning: unstructured, hard, the cubic schedule.
SparseConfig GmpConfig(double sparsity, int64_t start_step, int64_t end_step, int64_t update_every,
                       bool global = false);

// Throws (LOWBIT_CHECK) naming `where`, the field and the value seen.
void CheckSparseConfig(const SparseConfig& c, const std::string& where);

// "2:4-srste-every1" and the like: logs, and the check that a checkpoint's
// masks were made by the same settings.
std::string ToString(const SparseConfig& c);

// The schedule's values at optimizer step t (after t steps).
double ScheduledSparsity(const SparseConfig& c, int64_t t);  // kUnstructured, kBlock
double PgfBeta(const SparseConfig& c, int64_t t);
int64_t ScheduledN(const SparseConfig& c, int64_t t);  // kNm: c.n, or PGF's stage

}  // namespace lowbit::sparsity
