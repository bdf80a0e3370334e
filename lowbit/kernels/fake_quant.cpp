#include "lowbit/kernels/fake_quant.h"

#include <ATen/ATen.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/cpu/fake_quant.h"
#include "lowbit/kernels/internal/checks.h"
#include "lowbit/kernels/internal/cuda_dispatch.h"

namespace lowbit::kernels {

namespace {


// The CPU kernel and the CUDA dispatch with one signature.
void FakeQuantIntCpu(const at::Device&, const float* x, QuantGroups g, const float* scale, const float* zero_point,
                     const float* offset, float qmin, float qmax, float* y, uint8_t* mask, float* codes) {
  cpu::FakeQuantInt(x, g, scale, zero_point, offset, qmin, qmax, y, mask, codes);
}

cpu::Groups GroupsOf(const at::Tensor& x, const ScaleLayout& layout) {
  const int64_t n = x.numel();
  switch (layout.kind) {
    case ScaleLayout::kPerTensor:
      return {n, std::max<int64_t>(n, 1), 1};
    case ScaleLayout::kPerChannel: {
      int64_t inner = 1;
      for (int64_t d = layout.axis + 1; d < x.dim(); ++d) inner *= x.size(d);
      return {n, std::max<int64_t>(inner, 1), x.size(layout.axis)};
    }
    case ScaleLayout::kPerGroup:
      return {n, layout.group_size, n / layout.group_size};
  }
  LOWBIT_CHECK(false, "unknown ScaleLayout kind ", static_cast<int>(layout.kind));
}

void CheckScales(const char* op, const at::Tensor& x, const at::Tensor& t, const char* name, int64_t want) {
  if (!t.defined()) return;
  internal::CheckTensor(op, name, t, at::kFloat);
  internal::CheckNumel(op, name, t, want);
  internal::CheckSameDevice(op, x, t);
}

const float* PtrOrNull(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

void CheckGrid(const char* op, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
               const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout) {
  internal::CheckTensor(op, "x", x, at::kFloat);
  LOWBIT_CHECK(qmin < qmax, op, ": qmin must be < qmax, got qmin ", qmin, " and qmax ", qmax);
  LOWBIT_CHECK(qmin >= -(int64_t{1} << 16) && qmax <= (int64_t{1} << 16), op,
               ": the integer grid must lie within +-65536, got [", qmin, ", ", qmax, "]");
  const int64_t k = NumScales(x, layout);
  LOWBIT_CHECK(scale.defined(), op, ": scale is undefined");
  CheckScales(op, x, scale, "scale", k);
  CheckScales(op, x, zero_point, "zero_point", k);
  CheckScales(op, x, offset, "offset", k);
  LOWBIT_CHECK(scale.gt(0).all().item<bool>(), op, ": scale must be > 0, got min ", scale.min().item<float>());
}

}  // namespace

int64_t NumScales(const at::Tensor& x, const ScaleLayout& layout) {
  switch (layout.kind) {
    case ScaleLayout::kPerTensor:
      return 1;
    case ScaleLayout::kPerChannel:
      LOWBIT_CHECK(layout.axis >= 0 && layout.axis < x.dim(), "per-channel axis must be in [0, ", x.dim(), ") for a ",
                   x.dim(), "-D tensor, got ", layout.axis);
      return x.size(layout.axis);
    case ScaleLayout::kPerGroup: {
      LOWBIT_CHECK(x.dim() >= 1, "per-group scales need at least a 1-D tensor, got a scalar");
      const int64_t last = x.size(-1);
      LOWBIT_CHECK(layout.group_size >= 1 && last % layout.group_size == 0, "group_size must divide the last ",
                   "dimension (", last, "), got ", layout.group_size);
      return x.numel() / layout.group_size;
    }
  }
  LOWBIT_CHECK(false, "unknown ScaleLayout kind ", static_cast<int>(layout.kind));
}

at::Tensor FakeQuantizeInt(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                           const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout,
                           at::Tensor* mask) {
  CheckGrid("FakeQuantizeInt", x, scale, zero_point, offset, qmin, qmax, layout);
  at::Tensor y = at::empty_like(x);
  uint8_t* m = nullptr;
  if (mask != nullptr) {
    *mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
    m = reinterpret_cast<uint8_t*>(mask->data_ptr<bool>());
  }
  auto run = x.is_cuda() ? &internal::FakeQuantIntCuda : &FakeQuantIntCpu;
  run(x.device(), x.data_ptr<float>(), GroupsOf(x, layout), scale.data_ptr<float>(), PtrOrNull(zero_point),
      PtrOrNull(offset), static_cast<float>(qmin), static_cast<float>(qmax), y.data_ptr<float>(), m, nullptr);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> FakeQuantizeIntBackward(
    const at::Tensor& x, const at::Tensor& dy, const at::Tensor& scale, const at::Tensor& zero_point,
    const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout, bool want_dscale,
    bool want_doffset) {
  CheckGrid("FakeQuantizeIntBackward", x, scale, zero_point, offset, qmin, qmax, layout);
  internal::CheckTensor("FakeQuantizeIntBackward", "dy", dy, at::kFloat);
  internal::CheckNumel("FakeQuantizeIntBackward", "dy", dy, x.numel());
  const cpu::Groups g = GroupsOf(x, layout);
  at::Tensor dx = at::empty_like(x);
  at::Tensor ds = want_dscale ? at::empty_like(x) : at::Tensor();
  at::Tensor db = want_doffset ? at::empty_like(x) : at::Tensor();
  internal::CheckSameDevice("FakeQuantizeIntBackward", x, dy);
  float* ds_ptr = want_dscale ? ds.data_ptr<float>() : nullptr;
  float* db_ptr = want_doffset ? db.data_ptr<float>() : nullptr;
  if (x.is_cuda()) {
    internal::FakeQuantIntBackwardCuda(x.device(), x.data_ptr<float>(), dy.data_ptr<float>(), g,
                                       scale.data_ptr<float>(), PtrOrNull(zero_point), PtrOrNull(offset),
                                       static_cast<float>(qmin), static_cast<float>(qmax), dx.data_ptr<float>(),
                                       ds_ptr, db_ptr);
  } else {
    cpu::FakeQuantIntBackward(x.data_ptr<float>(), dy.data_ptr<float>(), g, scale.data_ptr<float>(),
                              PtrOrNull(zero_point), PtrOrNull(offset), static_cast<float>(qmin),
                              static_cast<float>(qmax), dx.data_ptr<float>(), ds_ptr, db_ptr);
  }
  // Per-scale sums: elements are laid out [outer, groups, inner].
  auto per_scale = [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    return t.view({-1, g.groups, g.inner}).sum(at::IntArrayRef{0, 2});
  };
  return {dx, per_scale(ds), per_scale(db)};
}

at::Tensor QuantizeIntCodes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                            const at::Tensor& offset, int64_t qmin, int64_t qmax, const ScaleLayout& layout) {
  CheckGrid("QuantizeIntCodes", x, scale, zero_point, offset, qmin, qmax, layout);
  at::Tensor y = at::empty_like(x), codes = at::empty_like(x);
  auto run = x.is_cuda() ? &internal::FakeQuantIntCuda : &FakeQuantIntCpu;
  run(x.device(), x.data_ptr<float>(), GroupsOf(x, layout), scale.data_ptr<float>(), PtrOrNull(zero_point),
      PtrOrNull(offset), static_cast<float>(qmin), static_cast<float>(qmax), y.data_ptr<float>(), nullptr,
      codes.data_ptr<float>());
  return codes;
}

at::Tensor FakeQuantizeMiniFloat(const at::Tensor& x, const at::Tensor& scale, MiniFloat format,
                                 const ScaleLayout& layout, at::Tensor* mask) {
  CheckGrid("FakeQuantizeMiniFloat", x, scale, {}, {}, 0, 1, layout);
  at::Tensor y = at::empty_like(x);
  uint8_t* m = nullptr;
  if (mask != nullptr) {
    *mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
    m = reinterpret_cast<uint8_t*>(mask->data_ptr<bool>());
  }
  if (x.is_cuda()) {
    internal::FakeQuantMiniFloatCuda(x.device(), x.data_ptr<float>(), GroupsOf(x, layout), scale.data_ptr<float>(),
                                     format, y.data_ptr<float>(), m);
  } else {
    cpu::FakeQuantMiniFloat(x.data_ptr<float>(), GroupsOf(x, layout), scale.data_ptr<float>(), format,
                            y.data_ptr<float>(), m);
  }
  return y;
}

at::Tensor QuestQuantizeRows(const at::Tensor& x, double clip_factor, int64_t bits, at::Tensor* mask,
                             at::Tensor* clips) {
  internal::CheckTensor("QuestQuantizeRows", "x", x, at::kFloat);
  LOWBIT_CHECK(x.dim() == 2, "QuestQuantizeRows: x must be 2-D (rows x cols), got ", x.dim(), "-D");
  LOWBIT_CHECK(bits >= 1 && bits <= 8, "QuestQuantizeRows: bits must be in [1, 8], got ", bits);
  LOWBIT_CHECK(clip_factor > 0, "QuestQuantizeRows: clip_factor must be > 0, got ", clip_factor);
  LOWBIT_CHECK(mask != nullptr, "QuestQuantizeRows: mask must be given");
  at::Tensor y = at::empty_like(x);
  *mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
  float* clip_ptr = nullptr;
  if (clips != nullptr) {
    *clips = at::empty({x.size(0)}, x.options());
    clip_ptr = clips->data_ptr<float>();
  }
  uint8_t* mask_ptr = reinterpret_cast<uint8_t*>(mask->data_ptr<bool>());
  if (x.is_cuda()) {
    internal::QuestQuantizeRowsCuda(x.device(), x.data_ptr<float>(), x.size(0), x.size(1),
                                    static_cast<float>(clip_factor), static_cast<int>(bits), y.data_ptr<float>(),
                                    mask_ptr, clip_ptr);
  } else {
    cpu::QuestQuantizeRows(x.data_ptr<float>(), x.size(0), x.size(1), static_cast<float>(clip_factor),
                           static_cast<int>(bits), y.data_ptr<float>(), mask_ptr, clip_ptr);
  }
  return y;
}

at::Tensor StochasticRoundInt(const at::Tensor& x, double scale, int64_t qmin, int64_t qmax, uint64_t key) {
  internal::CheckTensor("StochasticRoundInt", "x", x, at::kFloat);
  LOWBIT_CHECK(scale > 0, "StochasticRoundInt: scale must be > 0, got ", scale);
  LOWBIT_CHECK(qmin < qmax, "StochasticRoundInt: qmin must be < qmax, got ", qmin, " and ", qmax);
  at::Tensor y = at::empty_like(x);
  if (x.is_cuda()) {
    internal::StochasticRoundIntCuda(x.device(), x.data_ptr<float>(), x.numel(), static_cast<float>(scale),
                                     static_cast<float>(qmin), static_cast<float>(qmax), key, y.data_ptr<float>());
  } else {
    cpu::StochasticRoundInt(x.data_ptr<float>(), x.numel(), static_cast<float>(scale), static_cast<float>(qmin),
                            static_cast<float>(qmax), key, y.data_ptr<float>());
  }
  return y;
}

at::Tensor StochasticRoundMiniFloat(const at::Tensor& x, double scale, MiniFloat format, uint64_t key) {
  internal::CheckTensor("StochasticRoundMiniFloat", "x", x, at::kFloat);
  LOWBIT_CHECK(scale > 0, "StochasticRoundMiniFloat: scale must be > 0, got ", scale);
  at::Tensor y = at::empty_like(x);
  if (x.is_cuda()) {
    internal::StochasticRoundMiniFloatCuda(x.device(), x.data_ptr<float>(), x.numel(), static_cast<float>(scale),
                                           format, key, y.data_ptr<float>());
  } else {
    cpu::StochasticRoundMiniFloat(x.data_ptr<float>(), x.numel(), static_cast<float>(scale), format, key,
                                  y.data_ptr<float>());
  }
  return y;
}

void FastWalshHadamard_(at::Tensor& x, int64_t block) {
  internal::CheckTensor("FastWalshHadamard_", "x", x, at::kFloat);
  LOWBIT_CHECK(x.dim() >= 1, "FastWalshHadamard_: x must have at least one dimension");
  const int64_t cols = x.size(-1);
  LOWBIT_CHECK(block >= 1 && (block & (block - 1)) == 0 && cols % block == 0, "FastWalshHadamard_: block must be ",
               "a power of two dividing the last dimension (", cols, "), got ", block);
  if (x.numel() == 0) return;
  if (x.is_cuda()) {
    internal::FastWalshHadamardCuda(x.device(), x.data_ptr<float>(), x.numel() / cols, cols, block);
  } else {
    cpu::FastWalshHadamard(x.data_ptr<float>(), x.numel() / cols, cols, block);
  }
}

}  // namespace lowbit::kernels
