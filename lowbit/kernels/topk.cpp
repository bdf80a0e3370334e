#include "lowbit/kernels/topk.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/topk.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {
namespace {

void CheckInput(const char* op, const at::Tensor& x) {
  internal::CheckTensor(op, "x", x, at::kFloat);
  LOWBIT_CHECK(x.numel() <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 elements, got ", x.numel());
}

std::pair<at::Tensor, at::Tensor> GatherCpu(const at::Tensor& x, float threshold, int64_t count,
                                            int64_t max_ties) {
  at::Tensor idx = at::empty({count}, x.options().dtype(at::kInt));
  at::Tensor val = at::empty({count}, x.options());
  const int64_t got = cpu::GatherSelected(x.data_ptr<float>(), x.numel(), threshold, max_ties,
                                          idx.data_ptr<int32_t>(), val.data_ptr<float>());
  TORCH_INTERNAL_ASSERT(got == count, "GatherSelected wrote ", got, " of ", count);
  return {idx, val};
}

// The k-th largest magnitude among idx/val's `count` candidates and the k
// candidates it selects (ties to the lower index), in index order.
std::pair<at::Tensor, at::Tensor> ExactAmongCandidates(const int32_t* idx, const float* val, int64_t count,
                                                       int64_t k, const at::TensorOptions& options) {
  std::vector<float> mags(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) mags[i] = std::fabs(val[i]);
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end(), std::greater<float>());
  const float threshold = mags[k - 1];
  int64_t above = 0;
  for (int64_t i = 0; i < count; ++i) above += std::fabs(val[i]) > threshold;
  int64_t ties = k - above;
  at::Tensor out_idx = at::empty({k}, options.dtype(at::kInt));
  at::Tensor out_val = at::empty({k}, options);
  int32_t* oi = out_idx.data_ptr<int32_t>();
  float* ov = out_val.data_ptr<float>();
  int64_t got = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float a = std::fabs(val[i]);
    if (a > threshold || (a == threshold && ties > 0 && ties--)) {
      oi[got] = idx[i];
      ov[got] = val[i];
      ++got;
    }
  }
  TORCH_INTERNAL_ASSERT(got == k, "ExactAmongCandidates selected ", got, " of ", k);
  return {out_idx, out_val};
}

// Top-k on the CPU through a threshold estimated from a sample, as DGC
// estimates its threshold, but followed by an exact selection among the
// elements above it, so the answer is the full selection's: 256 evenly
// spaced runs of 64 elements give a sample whose r-th largest magnitude, r
// four standard deviations above the expected count, is below the k-th
// largest of x with high probability; one pass gathers the candidates at or
// above it (about k + 4 sqrt(k n / m) + 8 n / m of them: 1.3% of x for k = 1%)
// and nth_element runs on those alone. When the sample misjudges
// (fewer than k candidates, or far more than expected) it returns nothing
// and the caller selects over all of x.
std::optional<std::pair<at::Tensor, at::Tensor>> TopKBySample(const at::Tensor& x, int64_t k) {
  constexpr int64_t kRuns = 256;
  constexpr int64_t kRun = 64;
  constexpr int64_t m = kRuns * kRun;
  const int64_t n = x.numel();
  if (n < 8 * m) return std::nullopt;
  const float* px = x.data_ptr<float>();
  std::vector<float> sample(static_cast<size_t>(m));
  for (int64_t r = 0; r < kRuns; ++r) {
    const int64_t start = r * (n - kRun) / (kRuns - 1);
    for (int64_t j = 0; j < kRun; ++j) sample[r * kRun + j] = std::fabs(px[start + j]);
  }
  const double expect = static_cast<double>(k) / static_cast<double>(n) * m;
  const int64_t rank = static_cast<int64_t>(expect + 4.0 * std::sqrt(expect) + 8.0);
  if (rank >= m / 4) return std::nullopt;  // k is a large share of x: no saving
  std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<float>());
  const float threshold = sample[rank];
  const int64_t cap = std::max<int64_t>(2 * k, static_cast<int64_t>(2.0 * (rank + 1) / m * n)) + 1024;
  if (cap >= n / 2) return std::nullopt;
  std::vector<int32_t> idx;
  std::vector<float> val;
  int64_t count = 0;
  constexpr int64_t kChunk = int64_t{1} << 18;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (at::get_num_threads() == 1 || chunks == 1) {
    idx.resize(static_cast<size_t>(cap));
    val.resize(static_cast<size_t>(cap));
    count = cpu::GatherAtLeast(px, n, threshold, cap, idx.data(), val.data());
  } else {
    // Threads: each chunk (fixed in size, so the result is the one-thread
    // result) gathers into its own buffer, sized for twice its expected share
    // and, in the rare chunk that overflows it, counted and gathered again;
    // then the chunks are joined in order.
    std::vector<std::vector<int32_t>> chunk_idx(static_cast<size_t>(chunks));
    std::vector<std::vector<float>> chunk_val(static_cast<size_t>(chunks));
    const double share = static_cast<double>(cap) / static_cast<double>(n);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t begin = c * kChunk;
        const int64_t len = std::min(kChunk, n - begin);
        int64_t room = std::min<int64_t>(len, static_cast<int64_t>(share * static_cast<double>(len)) + 64);
        auto& ci = chunk_idx[c];
        auto& cv = chunk_val[c];
        ci.resize(static_cast<size_t>(room));
        cv.resize(static_cast<size_t>(room));
        int64_t got = cpu::GatherAtLeast(px + begin, len, threshold, room, ci.data(), cv.data());
        if (got < 0) {
          room = cpu::CountAtLeast(px + begin, len, threshold);
          ci.resize(static_cast<size_t>(room));
          cv.resize(static_cast<size_t>(room));
          got = cpu::GatherAtLeast(px + begin, len, threshold, room, ci.data(), cv.data());
        }
        ci.resize(static_cast<size_t>(got));
        cv.resize(static_cast<size_t>(got));
        for (int32_t& i : ci) i += static_cast<int32_t>(begin);
      }
    });
    for (const auto& ci : chunk_idx) count += static_cast<int64_t>(ci.size());
    if (count > cap) return std::nullopt;  // far more candidates than expected
    idx.reserve(static_cast<size_t>(count));
    val.reserve(static_cast<size_t>(count));
    for (int64_t c = 0; c < chunks; ++c) {
      idx.insert(idx.end(), chunk_idx[c].begin(), chunk_idx[c].end());
      val.insert(val.end(), chunk_val[c].begin(), chunk_val[c].end());
    }
  }
  if (count < k) return std::nullopt;  // too few (or, as -1, too many) candidates
  return ExactAmongCandidates(idx.data(), val.data(), count, k, x.options());
}

}  // namespace

std::pair<at::Tensor, at::Tensor> TopKByMagnitude(const at::Tensor& x, int64_t k) {
  CheckInput("TopKByMagnitude", x);
  const int64_t n = x.numel();
  LOWBIT_CHECK(k >= 0 && k <= n, "TopKByMagnitude: k must be in [0, ", n, "], got ", k);
  if (k == 0) {
    return {at::empty({0}, x.options().dtype(at::kInt)), at::empty({0}, x.options())};
  }
  if (x.is_cuda()) {
    const float threshold = std::get<0>(x.abs().topk(k)).min().item<float>();
    auto selected = internal::SelectAtLeastCuda(x, threshold);
    if (selected.first.numel() == k) return selected;
    // Ties at the threshold: resolve them by index on the host (rare for
    // real gradients), so the answer equals the CPU's.
    auto cpu_result = TopKByMagnitude(x.cpu(), k);
    return {cpu_result.first.to(x.device()), cpu_result.second.to(x.device())};
  }
  if (auto sampled = TopKBySample(x, k)) return *std::move(sampled);
  // The k-th largest magnitude, by selection over all of x in O(n).
  std::vector<float> mags(static_cast<size_t>(n));
  const float* px = x.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) mags[i] = std::fabs(px[i]);
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end(), std::greater<float>());
  const float threshold = mags[k - 1];
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += std::fabs(px[i]) > threshold;
  return GatherCpu(x, threshold, k, k - above);
}

std::pair<at::Tensor, at::Tensor> SelectAtLeast(const at::Tensor& x, float threshold) {
  CheckInput("SelectAtLeast", x);
  if (x.is_cuda()) return internal::SelectAtLeastCuda(x, threshold);
  const int64_t count = cpu::CountAtLeast(x.data_ptr<float>(), x.numel(), threshold);
  // max_ties = -1 takes every element equal to the threshold.
  return GatherCpu(x, threshold, count, /*max_ties=*/-1);
}

at::Tensor RandomSubset(uint64_t key, int64_t n, double density, c10::Device device) {
  LOWBIT_CHECK(n >= 0 && n <= std::numeric_limits<int32_t>::max(), "RandomSubset: n must be in [0, 2^31), got ", n);
  LOWBIT_CHECK(density > 0.0 && density <= 1.0, "RandomSubset: density must be in (0, 1], got ", density);
  at::Tensor idx = at::empty({n}, at::TensorOptions().dtype(at::kInt));
  const int64_t count = cpu::RandomSubset(key, n, static_cast<float>(density), idx.data_ptr<int32_t>());
  return idx.narrow(0, 0, count).clone().to(device);
}

void ScatterAdd(const at::Tensor& idx, const at::Tensor& val, at::Tensor& out) {
  internal::CheckTensor("ScatterAdd", "idx", idx, at::kInt);
  internal::CheckTensor("ScatterAdd", "val", val, at::kFloat);
  internal::CheckTensor("ScatterAdd", "out", out, at::kFloat);
  LOWBIT_CHECK(idx.numel() == val.numel(), "ScatterAdd: idx has ", idx.numel(), " elements but val has ", val.numel());
  internal::CheckSameDevice("ScatterAdd", idx, out);
  internal::CheckSameDevice("ScatterAdd", val, out);
  if (idx.numel() > 0) {
    // A corrupt index must not write outside `out`.
    const int64_t lo = idx.min().item<int32_t>();
    const int64_t hi = idx.max().item<int32_t>();
    LOWBIT_CHECK(lo >= 0 && hi < out.numel(), "ScatterAdd: indices must be in [0, ", out.numel(), "), got [", lo, ", ",
                 hi, "]");
  }
  if (out.is_cuda()) return internal::ScatterAddCuda(idx, val, out);
  cpu::ScatterAdd(idx.data_ptr<int32_t>(), val.data_ptr<float>(), idx.numel(), out.data_ptr<float>());
}

}  // namespace lowbit::kernels
