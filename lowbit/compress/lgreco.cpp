#include "lowbit/compress/lgreco.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "lowbit/base/error.h"

namespace lowbit::compress {

int64_t ErrorBins(double error, double budget, int64_t bins) {
  const double scaled = std::ceil(error / budget * static_cast<double>(bins));
  if (!(scaled <= static_cast<double>(bins))) return bins + 1;
  return scaled < 0.0 ? 0 : static_cast<int64_t>(scaled);
}

std::optional<LayerChoice> SolveLayerChoices(const LayerChoiceProblem& p) {
  LOWBIT_CHECK(p.bytes.size() == p.errors.size(), "L-GreCo: bytes has ", p.bytes.size(), " layers, errors has ",
               p.errors.size());
  LOWBIT_CHECK(std::isfinite(p.budget) && p.budget > 0.0, "L-GreCo: budget must be finite and > 0, got ", p.budget);
  LOWBIT_CHECK(p.bins >= 1 && p.bins <= 10000000, "L-GreCo: bins must be in [1, 1e7], got ", p.bins);
  const size_t layers = p.bytes.size();
  for (size_t l = 0; l < layers; ++l) {
    LOWBIT_CHECK(!p.bytes[l].empty(), "L-GreCo: layer ", l, " has an empty candidate set");
    LOWBIT_CHECK(p.bytes[l].size() == p.errors[l].size(), "L-GreCo: layer ", l, " has ", p.bytes[l].size(),
                 " sizes but ", p.errors[l].size(), " errors");
    for (size_t c = 0; c < p.bytes[l].size(); ++c) {
      LOWBIT_CHECK(p.bytes[l][c] >= 0, "L-GreCo: layer ", l, " candidate ", c, " has size ", p.bytes[l][c]);
      LOWBIT_CHECK(std::isfinite(p.errors[l][c]) && p.errors[l][c] >= 0.0, "L-GreCo: layer ", l, " candidate ", c,
                   " has error ", p.errors[l][c]);
    }
  }
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  const int64_t width = p.bins + 1;
  // best[e]: the smallest total size of the layers so far with binned error
  // exactly e; pick[l * width + e]: the candidate layer l took to get there.
  std::vector<int64_t> best(width, kNone), next(width);
  std::vector<int32_t> pick(layers * width, -1);
  best[0] = 0;
  for (size_t l = 0; l < layers; ++l) {
    std::fill(next.begin(), next.end(), kNone);
    for (size_t c = 0; c < p.bytes[l].size(); ++c) {
      const int64_t cost = ErrorBins(p.errors[l][c], p.budget, p.bins);
      if (cost > p.bins) continue;
      for (int64_t e = 0; e + cost < width; ++e) {
        if (best[e] == kNone) continue;
        const int64_t total = best[e] + p.bytes[l][c];
        if (total < next[e + cost]) {
          next[e + cost] = total;
          pick[l * width + e + cost] = static_cast<int32_t>(c);
        }
      }
    }
    best.swap(next);
  }
  int64_t end = -1;
  for (int64_t e = 0; e < width; ++e) {
    if (best[e] != kNone && (end < 0 || best[e] < best[end])) end = e;
  }
  if (end < 0) return std::nullopt;
  LayerChoice out;
  out.choice.assign(layers, 0);
  out.bytes = best[end];
  out.error_bins = end;
  for (size_t l = layers; l-- > 0;) {
    const int c = pick[l * width + end];
    TORCH_INTERNAL_ASSERT(c >= 0, "L-GreCo backtrack lost its way at layer ", l);
    out.choice[l] = c;
    out.error += p.errors[l][c];
    end -= ErrorBins(p.errors[l][c], p.budget, p.bins);
  }
  return out;
}

}  // namespace lowbit::compress
