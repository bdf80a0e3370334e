// L-GreCo's layer-wise choice: given, for every layer, the message size and
// the compression error of each candidate setting (PowerSGD rank, top-k
// density, QSGD bit-width), pick one candidate per layer so that the total
// size is smallest while the total error stays within a budget (Markov,
// Alimohammadi, Frantar, Alistarh, "L-GreCo: Layerwise-Adaptive Gradient
// Compression for Efficient Data-Parallel Deep Learning", MLSys 2024, sec. 3).
//
//   LayerChoiceProblem p;
//   p.bytes = {{100, 200}, {50, 400}};        // [layer][candidate]
//   p.errors = {{0.9, 0.1}, {0.5, 0.0}};
//   p.budget = 1.0;                            // e.g. alpha * the uniform default's total
//   std::optional<LayerChoice> best = SolveLayerChoices(p);   // best->choice[l]
//
// The errors are discretised into `bins` bins of budget / bins, rounded up,
// so any choice that fits the binned budget also fits the real one; the DP
// over (layer, binned error) is exact for the binned problem:
//   DP[l][e] = min_c DP[l-1][e - bin(err[l][c])] + bytes[l][c].
// Ties go to the smaller binned error, then to the lower candidate index, so
// the same inputs give the same choice on every rank.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace lowbit::compress {

struct LayerChoiceProblem {
  // [layer][candidate]; every layer needs at least one candidate.
  std::vector<std::vector<int64_t>> bytes;
  std::vector<std::vector<double>> errors;
  // > 0: the largest allowed sum of the chosen errors.
  double budget = 0.0;
  int64_t bins = 10000;
};

struct LayerChoice {
  std::vector<int> choice;  // candidate index per layer
  int64_t bytes = 0;        // sum of the chosen sizes
  double error = 0.0;       // sum of the chosen errors (<= budget)
  int64_t error_bins = 0;   // sum of the chosen binned errors (<= bins)
};

// How many bins of budget / bins `error` takes, rounded up; more than `bins`
// (capped at bins + 1) when it alone exceeds the budget.
int64_t ErrorBins(double error, double budget, int64_t bins);

// The cheapest choice whose binned error fits, or nullopt when none does.
std::optional<LayerChoice> SolveLayerChoices(const LayerChoiceProblem& problem);

}  // namespace lowbit::compress
