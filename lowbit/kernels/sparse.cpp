#include "lowbit/kernels/sparse.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/sparse.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {

namespace {

void CheckNm(const char* op, int64_t n, int64_t m) {
  LOWBIT_CHECK(m >= 1 && m <= 128, op, ": m must be in [1, 128], got ", m);
  LOWBIT_CHECK(n >= 1 && n <= m, op, ": n must be in [1, m = ", m, "], got ", n);
}

void CheckRows(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype, int64_t multiple) {
  internal::CheckTensor(op, name, t, dtype);
  LOWBIT_CHECK(t.dim() == 2, op, ": ", name, " must be 2-D [rows, cols], got ", t.dim(), "-D");
  LOWBIT_CHECK(t.size(1) % multiple == 0, op, ": ", name, "'s columns (", t.size(1), ") must be a multiple of ",
               multiple);
}

uint8_t* Bytes(at::Tensor& t) { return reinterpret_cast<uint8_t*>(t.data_ptr()); }
const uint8_t* Bytes(const at::Tensor& t) { return reinterpret_cast<const uint8_t*>(t.data_ptr()); }

void CheckSparsity(const char* op, double sparsity) {
  LOWBIT_CHECK(sparsity >= 0.0 && sparsity < 1.0, op, ": sparsity must be in [0, 1), got ", sparsity);
}

// Bool mask with the k lowest scores false, ties to the lower flat index;
// NaN counts as the highest score. O(n): the k-th smallest by selection,
// then the ties at it resolved by position.
at::Tensor PruneLowest(const at::Tensor& scores, int64_t k) {
  at::Tensor flat = scores.reshape({-1});
  at::Tensor mask = at::ones(flat.sizes(), flat.options().dtype(at::kBool));
  if (k == 0) return mask.view(scores.sizes());
  at::Tensor a = at::nan_to_num(flat, std::numeric_limits<double>::infinity());
  const at::Tensor t = std::get<0>(at::kthvalue(a, k));
  mask = a > t;
  const int64_t below = (a < t).sum().item<int64_t>();
  at::Tensor ties = at::nonzero(a == t).view({-1});  // increasing positions
  mask.index_fill_(0, ties.slice(0, k - below), true);
  return mask.view(scores.sizes());
}

}  // namespace

at::Tensor NmMask(const at::Tensor& w, int64_t n, int64_t m) {
  CheckNm("NmMask", n, m);
  CheckRows("NmMask", "w", w, at::kFloat, m);
  at::Tensor mask = at::empty(w.sizes(), w.options().dtype(at::kBool));
  const int64_t groups = w.numel() / m;
  if (w.is_cuda()) {
    internal::NmMaskCuda(w.device(), w.data_ptr<float>(), groups, static_cast<int>(m), static_cast<int>(n),
                         Bytes(mask));
  } else {
    cpu::NmMask(w.data_ptr<float>(), groups, static_cast<int>(m), static_cast<int>(n), Bytes(mask));
  }
  return mask;
}

NmCompressed CompressNm(const at::Tensor& w, const at::Tensor& mask, int64_t n, int64_t m) {
  CheckNm("CompressNm", n, m);
  CheckRows("CompressNm", "w", w, at::kFloat, m);
  internal::CheckTensor("CompressNm", "mask", mask, at::kBool);
  LOWBIT_CHECK(mask.sizes() == w.sizes(), "CompressNm: mask must have w's shape ", w.sizes(), ", got ", mask.sizes());
  internal::CheckSameDevice("CompressNm", w, mask);
  const int64_t groups = w.numel() / m;
  NmCompressed c{at::empty({w.size(0), w.size(1) / m * n}, w.options()),
                 at::empty({w.size(0), w.size(1) / m * n}, w.options().dtype(at::kByte))};
  int64_t bad;
  if (w.is_cuda()) {
    bad = internal::NmCompressCuda(w.device(), w.data_ptr<float>(), Bytes(mask), groups, static_cast<int>(m),
                                   static_cast<int>(n), c.values.data_ptr<float>(), Bytes(c.index));
  } else {
    bad = cpu::NmCompress(w.data_ptr<float>(), Bytes(mask), groups, static_cast<int>(m), static_cast<int>(n),
                          c.values.data_ptr<float>(), Bytes(c.index));
  }
  LOWBIT_CHECK(bad == 0, "CompressNm: ", bad, " of ", groups, " groups of the mask do not keep exactly n = ", n,
               " of m = ", m);
  return c;
}

at::Tensor DecompressNm(const at::Tensor& values, const at::Tensor& index, int64_t n, int64_t m) {
  CheckNm("DecompressNm", n, m);
  CheckRows("DecompressNm", "values", values, at::kFloat, n);
  CheckRows("DecompressNm", "index", index, at::kByte, n);
  LOWBIT_CHECK(index.sizes() == values.sizes(), "DecompressNm: index must have values' shape ", values.sizes(),
               ", got ", index.sizes());
  internal::CheckSameDevice("DecompressNm", values, index);
  const int64_t groups = values.numel() / n;
  at::Tensor out = at::empty({values.size(0), values.size(1) / n * m}, values.options());
  int64_t bad;
  if (values.is_cuda()) {
    bad = internal::NmDecompressCuda(values.device(), values.data_ptr<float>(), Bytes(index), groups,
                                     static_cast<int>(m), static_cast<int>(n), out.data_ptr<float>());
  } else {
    bad = cpu::NmDecompress(values.data_ptr<float>(), Bytes(index), groups, static_cast<int>(m), static_cast<int>(n),
                            out.data_ptr<float>());
  }
  LOWBIT_CHECK(bad == 0, "DecompressNm: ", bad, " of ", groups, " groups have an index >= m = ", m,
               " or indices that do not increase");
  return out;
}

at::Tensor MagnitudeMask(const at::Tensor& w, double sparsity) {
  CheckSparsity("MagnitudeMask", sparsity);
  LOWBIT_CHECK(w.defined() && w.is_floating_point(), "MagnitudeMask: w must be a floating-point tensor");
  const int64_t k = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(w.numel())));
  return PruneLowest(w.detach().abs(), k);
}

at::Tensor BlockMagnitudeMask(const at::Tensor& w, double sparsity, int64_t block_rows, int64_t block_cols) {
  CheckSparsity("BlockMagnitudeMask", sparsity);
  LOWBIT_CHECK(w.defined() && w.is_floating_point() && w.dim() == 2,
               "BlockMagnitudeMask: w must be a 2-D floating-point tensor");
  LOWBIT_CHECK(block_rows >= 1 && block_cols >= 1, "BlockMagnitudeMask: block must be at least 1 x 1, got ", block_rows,
               " x ", block_cols);
  LOWBIT_CHECK(w.size(0) % block_rows == 0 && w.size(1) % block_cols == 0, "BlockMagnitudeMask: block ", block_rows,
               " x ", block_cols, " must tile w's shape ", w.sizes());
  const int64_t br = w.size(0) / block_rows, bc = w.size(1) / block_cols;
  at::Tensor scores = w.detach().abs().reshape({br, block_rows, bc, block_cols}).sum(at::IntArrayRef{1, 3});
  const int64_t k = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(br * bc)));
  at::Tensor blocks = PruneLowest(scores, k);
  return blocks.view({br, 1, bc, 1}).expand({br, block_rows, bc, block_cols}).reshape(w.sizes());
}

}  // namespace lowbit::kernels
