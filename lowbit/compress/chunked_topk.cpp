#include "lowbit/compress/chunked_topk.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "lowbit/base/error.h"

namespace lowbit::compress {
namespace {

int64_t TailK(int64_t tail, int64_t chunk, int64_t k) {
  return std::min(tail, std::max<int64_t>(1, (k * tail + chunk - 1) / chunk));
}

}  // namespace

void CheckChunkedTopK(const char* who, int64_t chunk, int64_t k) {
  LOWBIT_CHECK(chunk >= 1 && chunk <= 32768, who, ": chunk must be in [1, 32768], got ", chunk);
  LOWBIT_CHECK(k >= 1 && k <= chunk, who, ": topk must be in [1, chunk = ", chunk, "], got ", k);
}

int64_t ChunkedTopKCount(int64_t numel, int64_t chunk, int64_t k) {
  const int64_t full = numel / chunk, tail = numel % chunk;
  return full * std::min(k, chunk) + (tail > 0 ? TailK(tail, chunk, k) : 0);
}

ChunkedSelection ChunkedTopK(const at::Tensor& flat, int64_t chunk, int64_t k) {
  CheckChunkedTopK("ChunkedTopK", chunk, k);
  LOWBIT_CHECK(flat.dim() == 1, "ChunkedTopK: the tensor must be flat, got ", flat.sizes());
  const int64_t n = flat.numel(), full = n / chunk, tail = n % chunk;
  std::vector<at::Tensor> index, values;
  if (full > 0) {
    const at::Tensor x = flat.narrow(0, 0, full * chunk).view({full, chunk});
    const at::Tensor local = std::get<1>(x.abs().topk(std::min(k, chunk), 1, true, false));
    values.push_back(x.gather(1, local).reshape({-1}));
    index.push_back((local + at::arange(full, local.options()).mul_(chunk).unsqueeze(1)).reshape({-1}));
  }
  if (tail > 0) {
    const at::Tensor x = flat.narrow(0, full * chunk, tail);
    const at::Tensor local = std::get<1>(x.abs().topk(TailK(tail, chunk, k), 0, true, false));
    values.push_back(x.index_select(0, local));
    index.push_back(local + full * chunk);
  }
  if (index.empty()) return {at::empty({0}, flat.options().dtype(at::kLong)), at::empty({0}, flat.options())};
  return {at::cat(index), at::cat(values)};
}

at::Tensor ChunkBase(int64_t numel, int64_t chunk, int64_t k, const at::TensorOptions& options) {
  const int64_t full = numel / chunk, tail = numel % chunk, kk = std::min(k, chunk);
  at::Tensor base = at::arange(full, options.dtype(at::kLong)).mul_(chunk).repeat_interleave(kk);
  if (tail > 0) base = at::cat({base, at::full({TailK(tail, chunk, k)}, full * chunk, options.dtype(at::kLong))});
  return base;
}

}  // namespace lowbit::compress
