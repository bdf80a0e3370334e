#include "lowbit/compress/builtin_compressors.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <cmath>

#include "lowbit/base/error.h"
#include "lowbit/kernels/internal/counter_rng.h"
#include "lowbit/kernels/quantize.h"
#include "lowbit/kernels/sign.h"
#include "lowbit/kernels/topk.h"

namespace lowbit::compress {

at::Tensor Compressor::EncodeWithFeedback(const at::Tensor& grad, const at::Tensor& residual,
                                          at::Tensor& next_residual, const EncodeContext& ctx) const {
  const at::Tensor x = residual.defined() ? grad + residual : grad;
  at::Tensor message = Encode(x, ctx);
  at::Tensor sent = at::empty_like(x);
  Decode(message, ctx, sent, /*accumulate=*/false);
  at::sub_out(next_residual, x, sent);
  return message;
}

void Compressor::DecodeSum(const std::vector<at::Tensor>& messages, const std::vector<EncodeContext>& ctxs,
                           at::Tensor& out, double divisor) const {
  LOWBIT_CHECK(!messages.empty() && messages.size() == ctxs.size(), Name(),
               ": DecodeSum needs one context per message");
  for (size_t r = 0; r < messages.size(); ++r) Decode(messages[r], ctxs[r], out, /*accumulate=*/r > 0);
  if (divisor != 1.0) out.div_(divisor);
}

std::string ToString(Exchange exchange) {
  switch (exchange) {
    case Exchange::kAllReduce:
      return "allreduce";
    case Exchange::kAllGather:
      return "allgather";
    case Exchange::kTwoPhase:
      return "twophase";
  }
  return "?";
}

namespace {

void CheckInput(const char* who, const at::Tensor& x) {
  LOWBIT_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 1, who,
               ": input must be a contiguous 1-D float32 tensor, got ", x.scalar_type(), " of shape ", x.sizes());
}

void Store(at::Tensor& out, const at::Tensor& value, bool accumulate) {
  if (accumulate) {
    out.add_(value);
  } else {
    out.copy_(value);
  }
}

// Bytes of `t` (any dtype) as a flat uint8 view, and back.
at::Tensor AsBytes(const at::Tensor& t) { return t.view({-1}).view(at::kByte); }
// A view when the bytes are aligned for `dtype` (as when encoding into a fresh
// message); a copy when not (a message inside a gathered buffer).
at::Tensor FromBytes(const at::Tensor& bytes, int64_t offset, int64_t count, at::ScalarType dtype) {
  const int64_t size = static_cast<int64_t>(c10::elementSize(dtype));
  at::Tensor part = bytes.narrow(0, offset, count * size);
  if (part.storage_offset() % size != 0) part = part.clone();
  return part.view(dtype);
}

class CastCompressor final : public Compressor {
 public:
  explicit CastCompressor(at::ScalarType dtype) : dtype_(dtype) {
    LOWBIT_CHECK(dtype == at::kHalf || dtype == at::kBFloat16, "cast compressor: dtype must be Half or BFloat16, got ",
                 dtype);
  }
  std::string Name() const override { return dtype_ == at::kHalf ? "fp16" : "bf16"; }
  std::string Config() const override { return Name(); }
  bool Supports(Exchange exchange) const override { return exchange == Exchange::kAllReduce; }
  Exchange DefaultExchange() const override { return Exchange::kAllReduce; }
  at::Tensor Encode(const at::Tensor& x, const EncodeContext&) const override {
    CheckInput("cast compressor", x);
    return x.to(dtype_);
  }
  void Decode(const at::Tensor& message, const EncodeContext&, at::Tensor& out, bool accumulate) const override {
    Store(out, message.to(at::kFloat), accumulate);
  }
  int64_t FixedMessageBytes(int64_t n) const override { return n * 2; }

 private:
  at::ScalarType dtype_;
};

// Message: float scales[NumBlocks], then the packed codes.
class QuantizeCompressor final : public Compressor {
 public:
  QuantizeCompressor(std::string name, kernels::QuantSpec spec) : name_(std::move(name)), spec_(spec) {
    kernels::CheckQuantSpec(spec_);
  }
  std::string Name() const override { return name_; }
  std::string Config() const override {
    return absl::StrCat(name_, "(bits=", spec_.bits, ",levels=", spec_.levels, ",block=", spec_.block,
                        ",stochastic=", spec_.stochastic, ")");
  }
  bool Supports(Exchange exchange) const override { return exchange != Exchange::kAllReduce; }
  Exchange DefaultExchange() const override { return Exchange::kAllGather; }
  at::Tensor Encode(const at::Tensor& x, const EncodeContext& ctx) const override {
    CheckInput(name_.c_str(), x);
    const int64_t n = x.numel();
    const int64_t nblocks = kernels::NumBlocks(n, spec_);
    at::Tensor message = at::empty({FixedMessageBytes(n)}, x.options().dtype(at::kByte));
    at::Tensor scales = FromBytes(message, 0, nblocks, at::kFloat);
    at::Tensor codes = message.narrow(0, nblocks * 4, kernels::PackedCodeBytes(n, spec_));
    kernels::AbsMaxQuantizeBlockwise(x, spec_, ctx.key, 0, scales, codes);
    return message;
  }
  void Decode(const at::Tensor& message, const EncodeContext&, at::Tensor& out, bool accumulate) const override {
    const int64_t n = out.numel();
    LOWBIT_CHECK(message.numel() == FixedMessageBytes(n), name_, ": message of ", message.numel(),
                 " bytes cannot hold ", n, " elements");
    const int64_t nblocks = kernels::NumBlocks(n, spec_);
    at::Tensor scales = FromBytes(message, 0, nblocks, at::kFloat);
    at::Tensor codes = message.narrow(0, nblocks * 4, kernels::PackedCodeBytes(n, spec_));
    kernels::DequantizeBlockwise(codes, scales, spec_, out, accumulate);
  }
  int64_t FixedMessageBytes(int64_t n) const override {
    return kernels::NumBlocks(n, spec_) * 4 + kernels::PackedCodeBytes(n, spec_);
  }
  at::Tensor EncodeWithFeedback(const at::Tensor& grad, const at::Tensor& residual, at::Tensor& next_residual,
                                const EncodeContext& ctx) const override {
    CheckInput(name_.c_str(), grad);
    const int64_t n = grad.numel();
    const int64_t nblocks = kernels::NumBlocks(n, spec_);
    at::Tensor message = at::empty({FixedMessageBytes(n)}, grad.options().dtype(at::kByte));
    at::Tensor scales = FromBytes(message, 0, nblocks, at::kFloat);
    at::Tensor codes = message.narrow(0, nblocks * 4, kernels::PackedCodeBytes(n, spec_));
    kernels::QuantizeWithFeedback(grad, residual, next_residual, spec_, ctx.key, 0, scales, codes);
    return message;
  }

 private:
  std::string name_;
  kernels::QuantSpec spec_;
};

// Message: float scales[ceil(n / block)], then ceil(n / 8) bytes of signs.
// block = 0: one scale for the whole message.
class SignCompressor final : public Compressor {
 public:
  SignCompressor(int64_t block, int scale_norm) : block_(block), scale_norm_(scale_norm) {
    LOWBIT_CHECK(block >= 0 && block % 8 == 0, "onebit block must be 0 or a positive multiple of 8, got ", block);
    LOWBIT_CHECK(scale_norm == 1 || scale_norm == 2, "onebit scale_norm must be 1 or 2, got ", scale_norm);
  }
  std::string Name() const override { return "onebit"; }
  std::string Config() const override {
    return absl::StrCat("onebit(block=", block_, ",scale_norm=", scale_norm_, ")");
  }
  bool Supports(Exchange exchange) const override { return exchange != Exchange::kAllReduce; }
  Exchange DefaultExchange() const override { return Exchange::kAllGather; }
  at::Tensor Encode(const at::Tensor& x, const EncodeContext&) const override {
    CheckInput("onebit", x);
    const int64_t n = x.numel();
    const int64_t block = BlockFor(n);
    const int64_t nblocks = NumBlocks(n);
    at::Tensor message = at::empty({FixedMessageBytes(n)}, x.options().dtype(at::kByte));
    at::Tensor scales = FromBytes(message, 0, nblocks, at::kFloat);
    at::Tensor bits = message.narrow(0, 4 * nblocks, (n + 7) / 8);
    kernels::PackSignsWithScales(x, block, scale_norm_, scales, bits);
    return message;
  }
  void Decode(const at::Tensor& message, const EncodeContext&, at::Tensor& out, bool accumulate) const override {
    const int64_t n = out.numel();
    LOWBIT_CHECK(message.numel() == FixedMessageBytes(n), "onebit: message of ", message.numel(), " bytes cannot hold ",
                 n, " elements");
    const int64_t nblocks = NumBlocks(n);
    kernels::UnpackSigns(message.narrow(0, 4 * nblocks, (n + 7) / 8), FromBytes(message, 0, nblocks, at::kFloat),
                         BlockFor(n), out, accumulate);
  }
  int64_t FixedMessageBytes(int64_t n) const override { return 4 * NumBlocks(n) + (n + 7) / 8; }
  void DecodeSum(const std::vector<at::Tensor>& messages, const std::vector<EncodeContext>& ctxs, at::Tensor& out,
                 double divisor) const override {
    const int64_t n = out.numel();
    if (n == 0 || out.is_cuda()) return Compressor::DecodeSum(messages, ctxs, out, divisor);
    const int64_t nblocks = NumBlocks(n);
    std::vector<at::Tensor> bits, scales;
    for (const at::Tensor& message : messages) {
      LOWBIT_CHECK(message.numel() == FixedMessageBytes(n), "onebit: message of ", message.numel(),
                   " bytes cannot hold ", n, " elements");
      bits.push_back(message.narrow(0, 4 * nblocks, (n + 7) / 8));
      scales.push_back(FromBytes(message, 0, nblocks, at::kFloat));
    }
    kernels::UnpackSignsSum(bits, scales, BlockFor(n), divisor, out);
  }
  at::Tensor EncodeWithFeedback(const at::Tensor& grad, const at::Tensor& residual, at::Tensor& next_residual,
                                const EncodeContext& ctx) const override {
    CheckInput("onebit", grad);
    const int64_t n = grad.numel();
    if (n == 0) return Compressor::EncodeWithFeedback(grad, residual, next_residual, ctx);
    const int64_t nblocks = NumBlocks(n);
    at::Tensor message = at::empty({FixedMessageBytes(n)}, grad.options().dtype(at::kByte));
    at::Tensor scales = FromBytes(message, 0, nblocks, at::kFloat);
    at::Tensor bits = message.narrow(0, 4 * nblocks, (n + 7) / 8);
    kernels::PackSignsWithFeedback(grad, residual, next_residual, BlockFor(n), scale_norm_, scales, bits);
    return message;
  }

 private:
  int64_t BlockFor(int64_t n) const { return block_ > 0 ? block_ : std::max<int64_t>(8, (n + 7) / 8 * 8); }
  int64_t NumBlocks(int64_t n) const { return n == 0 ? 1 : (n + BlockFor(n) - 1) / BlockFor(n); }

  int64_t block_;
  int scale_norm_;
};

void CheckDensity(double density) {
  LOWBIT_CHECK(density > 0.0 && density <= 1.0, "density must be in (0, 1], got ", density);
}

// Message: int32 indices[k], then float values[k].
class TopKCompressor final : public Compressor {
 public:
  explicit TopKCompressor(const TopKOptions& options) : options_(options) {
    CheckDensity(options.density);
    LOWBIT_CHECK(options.sample_ratio >= 0.0 && options.sample_ratio <= 1.0,
                 "top-k sample_ratio must be in [0, 1], got ", options.sample_ratio);
    LOWBIT_CHECK(options.warmup_steps >= 0, "top-k warmup_steps must be >= 0, got ", options.warmup_steps);
  }
  std::string Name() const override { return "topk"; }
  std::string Config() const override {
    return absl::StrCat("topk(density=", options_.density, ",sample_ratio=", options_.sample_ratio,
                        ",warmup_steps=", options_.warmup_steps, ")");
  }
  bool Supports(Exchange exchange) const override { return exchange == Exchange::kAllGather; }
  Exchange DefaultExchange() const override { return Exchange::kAllGather; }

  at::Tensor Encode(const at::Tensor& x, const EncodeContext& ctx) const override {
    CheckInput("topk", x);
    const int64_t n = x.numel();
    const int64_t k = std::min<int64_t>(n, std::max<int64_t>(1, static_cast<int64_t>(
                                                                    std::ceil(TopKDensityAt(options_, ctx.step) * n))));
    std::pair<at::Tensor, at::Tensor> picked;
    if (n == 0) {
      picked = kernels::TopKByMagnitude(x, 0);
    } else if (options_.sample_ratio > 0.0 && n > 4096) {
      picked = SampledTopK(x, k, ctx);
    } else {
      picked = kernels::TopKByMagnitude(x, k);
    }
    return at::cat({AsBytes(picked.first), AsBytes(picked.second)});
  }

  void Decode(const at::Tensor& message, const EncodeContext&, at::Tensor& out, bool accumulate) const override {
    LOWBIT_CHECK(message.numel() % 8 == 0, "topk: message of ", message.numel(), " bytes is not (index, value) pairs");
    const int64_t k = message.numel() / 8;
    if (!accumulate) out.zero_();
    at::Tensor idx = FromBytes(message, 0, k, at::kInt);
    at::Tensor val = FromBytes(message, 4 * k, k, at::kFloat);
    kernels::ScatterAdd(idx, val, out);
  }
  int64_t FixedMessageBytes(int64_t) const override { return -1; }

 private:
  // DGC: estimate the threshold on a strided sample of |x| (the start drawn
  // from the key), select everything above it, and fall back to an exact
  // top-k of the selection when it overshoots.
  std::pair<at::Tensor, at::Tensor> SampledTopK(const at::Tensor& x, int64_t k, const EncodeContext& ctx) const {
    const int64_t n = x.numel();
    const int64_t stride = std::max<int64_t>(1, static_cast<int64_t>(1.0 / options_.sample_ratio));
    const int64_t start = static_cast<int64_t>(kernels::RandomBits(ctx.key, -1) % static_cast<uint64_t>(stride));
    at::Tensor sample = x.narrow(0, start, n - start).slice(0, 0, n - start, stride).abs().contiguous();
    const int64_t ks = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(double(k) * sample.numel() / n)));
    const float threshold = std::get<0>(sample.topk(std::min<int64_t>(ks, sample.numel()))).min().item<float>();
    auto selected = kernels::SelectAtLeast(x, threshold);
    const int64_t got = selected.first.numel();
    if (got <= k + k * 3 / 10) return selected;
    auto inner = kernels::TopKByMagnitude(selected.second.contiguous(), k);
    return {selected.first.index_select(0, inner.first.to(at::kLong)), inner.second};
  }

  TopKOptions options_;
};

// Message: the values at the kept indices (float32, summed by allreduce).
class RandomKCompressor final : public Compressor {
 public:
  explicit RandomKCompressor(double density) : density_(density) { CheckDensity(density); }
  std::string Name() const override { return "randomk"; }
  std::string Config() const override { return absl::StrCat("randomk(density=", density_, ")"); }
  bool Supports(Exchange exchange) const override { return exchange == Exchange::kAllReduce; }
  Exchange DefaultExchange() const override { return Exchange::kAllReduce; }
  at::Tensor Encode(const at::Tensor& x, const EncodeContext& ctx) const override {
    CheckInput("randomk", x);
    at::Tensor idx = kernels::RandomSubset(ctx.shared_key, x.numel(), density_, x.device());
    return x.index_select(0, idx.to(at::kLong));
  }
  void Decode(const at::Tensor& message, const EncodeContext& ctx, at::Tensor& out, bool accumulate) const override {
    at::Tensor idx = kernels::RandomSubset(ctx.shared_key, out.numel(), density_, out.device());
    LOWBIT_CHECK(idx.numel() == message.numel(), "randomk: message has ", message.numel(), " values, the key selects ",
                 idx.numel());
    if (!accumulate) out.zero_();
    at::Tensor values = message.to(at::kFloat).contiguous();
    kernels::ScatterAdd(idx, values, out);
  }
  int64_t FixedMessageBytes(int64_t) const override { return -1; }

 private:
  double density_;
};

}  // namespace

double TopKDensityAt(const TopKOptions& options, int64_t step) {
  if (options.warmup_steps <= 0 || step >= options.warmup_steps || options.density >= 0.25) {
    return options.density;
  }
  // Stage s of 4 uses 0.25 * (density / 0.25)^(s / 4).
  const int64_t stage = step * 4 / options.warmup_steps;
  return 0.25 * std::pow(options.density / 0.25, static_cast<double>(stage) / 4.0);
}

std::shared_ptr<Compressor> MakeCastCompressor(at::ScalarType dtype) {
  return std::make_shared<CastCompressor>(dtype);
}

std::shared_ptr<Compressor> MakeQsgdCompressor(int bits, int64_t block, bool stochastic) {
  LOWBIT_CHECK(bits >= 1 && bits <= 8, "qsgd bits must be in [1, 8], got ", bits);
  kernels::QuantSpec spec;
  spec.bits = bits;
  spec.levels = (1 << bits) - 1;
  spec.block = block;
  spec.stochastic = stochastic;
  return std::make_shared<QuantizeCompressor>("qsgd", spec);
}

std::shared_ptr<Compressor> MakeTernaryCompressor(int64_t block, bool stochastic) {
  kernels::QuantSpec spec;
  spec.bits = 2;
  spec.levels = 2;
  spec.block = block;
  spec.stochastic = stochastic;
  return std::make_shared<QuantizeCompressor>("ternary", spec);
}

std::shared_ptr<Compressor> MakeSignCompressor(int64_t block, int scale_norm) {
  return std::make_shared<SignCompressor>(block, scale_norm);
}

std::shared_ptr<Compressor> MakeTopKCompressor(const TopKOptions& options) {
  return std::make_shared<TopKCompressor>(options);
}

std::shared_ptr<Compressor> MakeRandomKCompressor(double density) {
  return std::make_shared<RandomKCompressor>(density);
}

}  // namespace lowbit::compress
