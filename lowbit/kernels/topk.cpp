#include "lowbit/kernels/topk.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/kernels/cpu/topk.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {
namespace {

void CheckInput(const char* op, const at::Tensor& x) {
  internal::CheckTensor(op, "x", x, at::kFloat);
  TORCH_CHECK(x.numel() <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 elements, got ",
              x.numel());
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

}  // namespace

std::pair<at::Tensor, at::Tensor> TopKByMagnitude(const at::Tensor& x, int64_t k) {
  CheckInput("TopKByMagnitude", x);
  const int64_t n = x.numel();
  TORCH_CHECK(k >= 0 && k <= n, "TopKByMagnitude: k must be in [0, ", n, "], got ", k);
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
  // The k-th largest magnitude, by selection in O(n).
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
  TORCH_CHECK(n >= 0 && n <= std::numeric_limits<int32_t>::max(), "RandomSubset: n must be in [0, 2^31), got ",
              n);
  TORCH_CHECK(density > 0.0 && density <= 1.0, "RandomSubset: density must be in (0, 1], got ", density);
  at::Tensor idx = at::empty({n}, at::TensorOptions().dtype(at::kInt));
  const int64_t count = cpu::RandomSubset(key, n, static_cast<float>(density), idx.data_ptr<int32_t>());
  return idx.narrow(0, 0, count).clone().to(device);
}

void ScatterAdd(const at::Tensor& idx, const at::Tensor& val, at::Tensor& out) {
  internal::CheckTensor("ScatterAdd", "idx", idx, at::kInt);
  internal::CheckTensor("ScatterAdd", "val", val, at::kFloat);
  internal::CheckTensor("ScatterAdd", "out", out, at::kFloat);
  TORCH_CHECK(idx.numel() == val.numel(), "ScatterAdd: idx has ", idx.numel(), " elements but val has ",
              val.numel());
  internal::CheckSameDevice("ScatterAdd", idx, out);
  internal::CheckSameDevice("ScatterAdd", val, out);
  if (idx.numel() > 0) {
    // A corrupt index must not write outside `out`.
    const int64_t lo = idx.min().item<int32_t>();
    const int64_t hi = idx.max().item<int32_t>();
    TORCH_CHECK(lo >= 0 && hi < out.numel(), "ScatterAdd: indices must be in [0, ", out.numel(), "), got [", lo,
                ", ", hi, "]");
  }
  if (out.is_cuda()) return internal::ScatterAddCuda(idx, val, out);
  cpu::ScatterAdd(idx.data_ptr<int32_t>(), val.data_ptr<float>(), idx.numel(), out.data_ptr<float>());
}

}  // namespace lowbit::kernels
