#include "lowbit/sparsity/sparse_config.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"

namespace lowbit::sparsity {

namespace {

const char* Name(Method m) {
  switch (m) {
    case Method::kHard:
      return "hard";
    case Method::kSrSte:
      return "srste";
    case Method::kPgf:
      return "pgf";
  }
  return "?";
}

// Progress through [start_step, end_step] in [0, 1]; 1 when the interval is empty.
double Progress(const SparseConfig& c, int64_t t) {
  if (c.end_step <= c.start_step) return 1.0;
  return std::clamp(static_cast<double>(t - c.start_step) / static_cast<double>(c.end_step - c.start_step), 0.0,
                    1.0);
}

}  // namespace

SparseConfig GmpConfig(double sparsity, int64_t start_step, int64_t end_step, int64_t update_every,
                       bool global) {
  SparseConfig c;
  c.global = global;
  c.pattern = Pattern::kUnstructured;
  c.method = Method::kHard;
  c.sparsity = sparsity;
  c.start_step = start_step;
  c.end_step = end_step;
  c.update_every = update_every;
  return c;
}

void CheckSparseConfig(const SparseConfig& c, const std::string& where) {
  if (c.pattern == Pattern::kNm) {
    LOWBIT_CHECK(c.m >= 2 && c.m <= 128, where, ": m must be in [2, 128], got ", c.m);
    LOWBIT_CHECK(c.n >= 1 && c.n < c.m, where, ": N:M needs 1 <= n < m, got ", c.n, ":", c.m);
  } else {
    LOWBIT_CHECK(c.sparsity >= 0.0 && c.sparsity < 1.0, where, ": sparsity must be in [0, 1), got ", c.sparsity);
    LOWBIT_CHECK(c.initial_sparsity >= 0.0 && c.initial_sparsity <= c.sparsity, where,
                 ": initial_sparsity must be in [0, sparsity = ", c.sparsity, "], got ", c.initial_sparsity);
    LOWBIT_CHECK(c.method != Method::kPgf, where, ": pgf steps N:M; it needs the N:M pattern");
  }
  LOWBIT_CHECK(!c.global || c.pattern == Pattern::kUnstructured, where,
               ": global magnitude pruning needs the unstructured pattern");
  if (c.pattern == Pattern::kBlock) {
    LOWBIT_CHECK(c.block_rows >= 1 && c.block_cols >= 1, where, ": block must be at least 1 x 1, got ", c.block_rows,
                 " x ", c.block_cols);
  }
  LOWBIT_CHECK(c.update_every >= 1, where, ": update_every must be >= 1, got ", c.update_every);
  LOWBIT_CHECK(c.start_step >= 0 && c.end_step >= 0, where, ": start_step and end_step must be >= 0, got ",
               c.start_step, " and ", c.end_step);
  LOWBIT_CHECK(c.end_step == 0 || c.end_step >= c.start_step, where, ": end_step (", c.end_step,
               ") must be >= start_step (", c.start_step, ")");
  LOWBIT_CHECK(c.srste_lambda >= 0.0, where, ": srste_lambda must be >= 0, got ", c.srste_lambda);
  LOWBIT_CHECK(c.pgf_beta0 >= 0.0 && c.pgf_beta0 <= 1.0, where, ": pgf_beta0 must be in [0, 1], got ", c.pgf_beta0);
}

std::string ToString(const SparseConfig& c) {
  std::string s;
  switch (c.pattern) {
    case Pattern::kNm:
      s = absl::StrCat(c.n, ":", c.m);
      break;
    case Pattern::kUnstructured:
      s = absl::StrCat(c.global ? "global" : "unstructured", c.sparsity);
      break;
    case Pattern::kBlock:
      s = absl::StrCat("block", c.block_rows, "x", c.block_cols, "-", c.sparsity);
      break;
  }
  absl::StrAppend(&s, "-", Name(c.method), "-every", c.update_every);
  if (c.method == Method::kSrSte) absl::StrAppend(&s, "-lambda", c.srste_lambda);
  if (c.method == Method::kPgf) absl::StrAppend(&s, "-beta", c.pgf_beta0);
  if (c.end_step > c.start_step) {
    absl::StrAppend(&s, "-from", c.initial_sparsity, "-steps", c.start_step, "-", c.end_step);
  }
  return s;
}

double ScheduledSparsity(const SparseConfig& c, int64_t t) {
  if (c.end_step <= c.start_step) return c.sparsity;
  if (t < c.start_step) return c.initial_sparsity;
  const double r = 1.0 - Progress(c, t);
  return c.sparsity + (c.initial_sparsity - c.sparsity) * r * r * r;
}

double PgfBeta(const SparseConfig& c, int64_t t) {
  if (c.method != Method::kPgf) return 0.0;
  return c.pgf_beta0 * (1.0 - Progress(c, t));
}

int64_t ScheduledN(const SparseConfig& c, int64_t t) {
  if (c.method != Method::kPgf) return c.n;
  const int64_t stages = c.m - c.n + 1;
  const int64_t stage = std::min<int64_t>(static_cast<int64_t>(Progress(c, t) * static_cast<double>(stages)), stages - 1);
  return c.m - stage;
}

}  // namespace lowbit::sparsity
