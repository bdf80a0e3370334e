#include "lowbit/qat/estimators.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "lowbit/base/error.h"

namespace lowbit::qat {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace k = lowbit::kernels;

// The layout travels through the autograd context as three integers.
void SaveLayout(AutogradContext* ctx, const k::ScaleLayout& layout) {
  ctx->saved_data["kind"] = static_cast<int64_t>(layout.kind);
  ctx->saved_data["axis"] = layout.axis;
  ctx->saved_data["group"] = layout.group_size;
}

k::ScaleLayout LoadLayout(AutogradContext* ctx) {
  k::ScaleLayout layout;
  layout.kind = static_cast<k::ScaleLayout::Kind>(ctx->saved_data["kind"].toInt());
  layout.axis = ctx->saved_data["axis"].toInt();
  layout.group_size = ctx->saved_data["group"].toInt();
  return layout;
}

at::Tensor Detached(const at::Tensor& t) { return t.defined() ? t.detach() : t; }

// Backward of an STE forward: dy, masked by the saved inside-mask when the
// forward was clipped; no gradient for the `inputs` - 1 other arguments.
variable_list SteBackward(AutogradContext* ctx, const at::Tensor& dy, int inputs) {
  variable_list out(inputs);
  out[0] = ctx->saved_data["clipped"].toBool() ? dy * ctx->get_saved_variables()[0] : dy;
  return out;
}

// Optional tensors cross Function::apply as c10::optional: LibTorch 1.13
// records a device for every at::Tensor argument, which an undefined one lacks.
using OptTensor = c10::optional<at::Tensor>;
OptTensor Opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; }
at::Tensor Or(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

struct SteFunction : torch::autograd::Function<SteFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const OptTensor& zero_point, const OptTensor& offset, int64_t qmin, int64_t qmax,
                            k::ScaleLayout layout, bool clipped) {
    at::Tensor mask;
    at::Tensor y = k::FakeQuantizeInt(x.contiguous(), Detached(scale).contiguous(), Detached(Or(zero_point)),
                                      Detached(Or(offset)), qmin, qmax, layout, clipped ? &mask : nullptr);
    if (clipped) ctx->save_for_backward({mask});
    ctx->saved_data["clipped"] = clipped;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) { return SteBackward(ctx, grad[0], 8); }
};

struct MiniFloatSteFunction : torch::autograd::Function<MiniFloatSteFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale, int64_t exp_bits,
                            int64_t man_bits, double max_value, k::ScaleLayout layout, bool clipped) {
    at::Tensor mask;
    const k::MiniFloat f{static_cast<int>(exp_bits), static_cast<int>(man_bits), static_cast<float>(max_value)};
    at::Tensor y = k::FakeQuantizeMiniFloat(x.contiguous(), Detached(scale).contiguous(), f, layout,
                                            clipped ? &mask : nullptr);
    if (clipped) ctx->save_for_backward({mask});
    ctx->saved_data["clipped"] = clipped;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) { return SteBackward(ctx, grad[0], 7); }
};

struct LsqFunction : torch::autograd::Function<LsqFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const OptTensor& offset_opt, int64_t qmin, int64_t qmax, k::ScaleLayout layout,
                            double grad_factor) {
    const at::Tensor offset = Or(offset_opt);
    at::Tensor xc = x.contiguous();
    at::Tensor s = scale.detach().contiguous().view({-1});
    at::Tensor b = offset.defined() ? offset.detach().contiguous().view({-1}) : at::Tensor();
    at::Tensor y = k::FakeQuantizeInt(xc, s, {}, b, qmin, qmax, layout);
    ctx->save_for_backward(b.defined() ? torch::autograd::variable_list{xc, s, b} : torch::autograd::variable_list{xc, s});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["factor"] = grad_factor;
    ctx->saved_data["has_offset"] = offset.defined();
    ctx->saved_data["scale_shape"] = scale.sizes().vec();
    if (offset.defined()) ctx->saved_data["offset_shape"] = offset.sizes().vec();
    SaveLayout(ctx, layout);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const bool has_offset = ctx->saved_data["has_offset"].toBool();
    auto [dx, ds, db] = k::FakeQuantizeIntBackward(
        saved[0], grad[0].contiguous(), saved[1], {}, has_offset ? saved[2] : at::Tensor(),
        ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(), LoadLayout(ctx), true, has_offset);
    ds = (ds * ctx->saved_data["factor"].toDouble()).view(ctx->saved_data["scale_shape"].toIntVector());
    if (has_offset) db = (db * ctx->saved_data["factor"].toDouble()).view(ctx->saved_data["offset_shape"].toIntVector());
    return {dx, ds, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct PactFunction : torch::autograd::Function<PactFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha, int64_t bits) {
    const int64_t qmax = (int64_t{1} << bits) - 1;
    at::Tensor xc = x.contiguous();
    // alpha > 0 is checked by FakeQuantizeInt through the scale.
    at::Tensor scale = (alpha.detach().reshape({1}) / static_cast<double>(qmax)).contiguous();
    at::Tensor y = k::FakeQuantizeInt(xc, scale, {}, {}, 0, qmax, {});
    ctx->save_for_backward({xc, alpha.detach()});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor alpha = saved[1].reshape({});
    const at::Tensor dy = grad[0];
    at::Tensor dx = dy * (x.ge(0) & x.le(alpha));
    at::Tensor dalpha = (dy * x.ge(alpha)).sum().view(saved[1].sizes());
    return {dx, dalpha, at::Tensor()};
  }
};

// Rows along `dim`, as a contiguous [rows, cols] tensor (a copy).
at::Tensor RowsAlong(const at::Tensor& x, int64_t dim) {
  at::Tensor moved = x.movedim(dim, -1).contiguous().clone();
  return moved.view({-1, x.size(dim)});
}

at::Tensor FromRows(const at::Tensor& rows, const at::Tensor& like, int64_t dim) {
  std::vector<int64_t> moved_shape = like.movedim(dim, -1).sizes().vec();
  return rows.view(moved_shape).movedim(-1, dim).contiguous();
}

struct QuestFunction : torch::autograd::Function<QuestFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t bits, int64_t max_block,
                            int64_t dim) {
    const int64_t block = QuestBlock(x.size(dim), max_block);
    at::Tensor rows = RowsAlong(x, dim);
    k::FastWalshHadamard_(rows, block);
    at::Tensor mask;
    at::Tensor q = k::QuestQuantizeRows(rows, QuestGaussianClip(bits), bits, &mask);
    k::FastWalshHadamard_(q, block);
    ctx->save_for_backward({mask});
    ctx->saved_data["block"] = block;
    ctx->saved_data["dim"] = dim;
    return FromRows(q, x, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor mask = ctx->get_saved_variables()[0];
    const int64_t block = ctx->saved_data["block"].toInt(), dim = ctx->saved_data["dim"].toInt();
    at::Tensor g = RowsAlong(grad[0], dim);
    k::FastWalshHadamard_(g, block);
    g.mul_(mask);
    k::FastWalshHadamard_(g, block);
    return {FromRows(g, grad[0], dim), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct StochasticFunction : torch::autograd::Function<StochasticFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double scale, int64_t qmin, int64_t qmax,
                            int64_t key) {
    return k::StochasticRoundInt(x.contiguous(), scale, qmin, qmax, static_cast<uint64_t>(key));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {grad[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct GradientQuantFunction : torch::autograd::Function<GradientQuantFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, int64_t kind, int64_t key) {
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["key"] = key;
    return y.view_as(y);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto kind = static_cast<GradientQuant::Kind>(ctx->saved_data["kind"].toInt());
    const auto key = static_cast<uint64_t>(ctx->saved_data["key"].toInt());
    at::Tensor dy = grad[0].contiguous();
    const double amax = dy.abs().max().item<double>();
    if (!(amax > 0) || !std::isfinite(amax)) return {dy, at::Tensor(), at::Tensor()};
    at::Tensor q;
    switch (kind) {
      case GradientQuant::kInt8:
        q = k::StochasticRoundInt(dy, amax / 127.0, -127, 127, key);
        break;
      case GradientQuant::kFp8E5M2:
        q = k::StochasticRoundMiniFloat(dy, amax / 57344.0, k::MiniFloatE5M2(), key);
        break;
      case GradientQuant::kFp8E4M3:
        q = k::StochasticRoundMiniFloat(dy, amax / 448.0, k::MiniFloatE4M3(), key);
        break;
      case GradientQuant::kNone:
        q = dy;
        break;
    }
    return {q, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

double QuestGaussianClip(int64_t bits) {
  // argmin_c E[(Q_c(x) - x)^2], x ~ N(0, 1), for 2^bits levels on [-c, c]
  // (QuEST's OPTIMAL_GAUSSIAN_SCALES; tests/qat recomputes them).
  static constexpr double kClip[9] = {0.0, 0.7978845587140913, 1.4935346200015913, 2.051068354131873,
                                      2.513930578568423, 2.9160938834961225, 3.276597282593217,
                                      3.6010497188221655, 3.884938678807525};
  LOWBIT_CHECK(bits >= 1 && bits <= 8, "QuEST bits must be in [1, 8], got ", bits);
  return kClip[bits];
}

int64_t QuestBlock(int64_t cols, int64_t max_block) {
  LOWBIT_CHECK(cols >= 1, "QuEST rows must not be empty, got ", cols, " columns");
  int64_t block = 1;
  while (block * 2 <= max_block && cols % (block * 2) == 0) block *= 2;
  return block;
}

at::Tensor FakeQuantSte(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                        const at::Tensor& offset, int64_t qmin, int64_t qmax, const kernels::ScaleLayout& layout,
                        bool clipped) {
  return SteFunction::apply(x, scale, Opt(zero_point), Opt(offset), qmin, qmax, layout, clipped);
}

at::Tensor FakeQuantMiniFloatSte(const at::Tensor& x, const at::Tensor& scale, kernels::MiniFloat format,
                                 const kernels::ScaleLayout& layout, bool clipped) {
  return MiniFloatSteFunction::apply(x, scale, static_cast<int64_t>(format.exp_bits),
                                     static_cast<int64_t>(format.man_bits), static_cast<double>(format.max_value),
                                     layout, clipped);
}

at::Tensor FakeQuantLsq(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& offset, int64_t qmin,
                        int64_t qmax, const kernels::ScaleLayout& layout, double grad_factor) {
  LOWBIT_CHECK(grad_factor > 0, "FakeQuantLsq: grad_factor must be > 0, got ", grad_factor);
  return LsqFunction::apply(x, scale, Opt(offset), qmin, qmax, layout, grad_factor);
}

at::Tensor FakeQuantPact(const at::Tensor& x, const at::Tensor& alpha, int64_t bits) {
  LOWBIT_CHECK(bits >= 1 && bits <= 8, "FakeQuantPact: bits must be in [1, 8], got ", bits);
  LOWBIT_CHECK(alpha.numel() == 1, "FakeQuantPact: alpha must have one element, got ", alpha.numel());
  return PactFunction::apply(x, alpha, bits);
}

at::Tensor FakeQuantQuest(const at::Tensor& x, int64_t bits, int64_t max_block, int64_t dim) {
  LOWBIT_CHECK(bits >= 1 && bits <= 8, "FakeQuantQuest: bits must be in [1, 8], got ", bits);
  LOWBIT_CHECK(x.dim() >= 1 && dim >= 0 && dim < x.dim(), "FakeQuantQuest: dim must be in [0, ", x.dim(), "), got ",
               dim);
  return QuestFunction::apply(x, bits, max_block, dim);
}

at::Tensor FakeQuantStochastic(const at::Tensor& x, double scale, int64_t qmin, int64_t qmax, uint64_t key) {
  return StochasticFunction::apply(x, scale, qmin, qmax, static_cast<int64_t>(key));
}

at::Tensor QuantizeGradient(const at::Tensor& y, GradientQuant q, uint64_t key) {
  if (q.kind == GradientQuant::kNone) return y;
  return GradientQuantFunction::apply(y, static_cast<int64_t>(q.kind), static_cast<int64_t>(key));
}

}  // namespace lowbit::qat
