// Compressor: how one flat float32 tensor becomes a message and back.
//
// Compression hooks (comm/compression_hook.h) combine a Compressor with an
// ErrorFeedback policy and a collective. The compressors are in
// compress/builtin_compressors.h: fp16, bf16, QSGD b-bit, ternary, sign (1-bit), top-k and
// random-k.
//
//   auto c = MakeQsgdCompressor(/*bits=*/4, /*block=*/256);
//   at::Tensor msg = c->Encode(x, ctx);          // uint8: codes + scales
//   at::Tensor y = at::zeros_like(x);
//   c->Decode(msg, ctx, y, /*accumulate=*/true);  // y += decode(msg)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lowbit::compress {

// Which collective carries a compressor's messages.
enum class Exchange {
  // Messages are floating tensors whose sum decodes to the sum of the decoded
  // messages (casts; random-k with indices shared by all ranks).
  kAllReduce,
  // Messages are bytes of any length; every rank gathers and decodes all.
  kAllGather,
  // DeepSpeed's compressed allreduce: each rank compresses its chunks for all
  // ranks (all-to-all), decodes and averages its own chunk, recompresses it
  // with a server error, and all-gathers the result. Needs messages whose
  // length depends only on the element count.
  kTwoPhase,
};
std::string ToString(Exchange exchange);

// Where randomness comes from: kernels/internal/counter_rng.h keys made of the
// seed, the step, the rank and the tensor, so runs are reproducible and
// resumable. `shared_key` is the same on every rank (random-k indices);
// `key` differs per rank (stochastic rounding).
struct EncodeContext {
  uint64_t key = 0;
  uint64_t shared_key = 0;
  int64_t step = 0;
};

class Compressor {
 public:
  virtual ~Compressor() = default;
  virtual std::string Name() const = 0;
  // Every setting that must agree across ranks.
  virtual std::string Config() const = 0;
  // Which exchanges can carry the messages, and which the hook uses by default.
  virtual bool Supports(Exchange exchange) const = 0;
  virtual Exchange DefaultExchange() const = 0;
  // Encodes contiguous float32 `x`. kAllReduce compressors return a floating
  // tensor; the others uint8.
  virtual at::Tensor Encode(const at::Tensor& x, const EncodeContext& ctx) const = 0;
  // out (float32, contiguous, the encoded element count) (+)= decode(message).
  virtual void Decode(const at::Tensor& message, const EncodeContext& ctx, at::Tensor& out,
                      bool accumulate) const = 0;
  // The message size in bytes for n elements, or -1 when it depends on the data.
  virtual int64_t FixedMessageBytes(int64_t n) const = 0;
  // Classic error feedback fused with Encode: encodes x = grad + residual
  // (residual undefined: zero) and writes x - decode(message) into
  // next_residual (float32, grad's size; it may be residual itself). The
  // built-in qsgd, ternary and onebit do it in one pass over grad and
  // residual on the CPU; this default takes the steps one at a time, with
  // the same result.
  // out = (the sum over r, in order, of decode(messages[r]) with ctxs[r]) /
  // divisor: the all-gather exchange's mean. The built-in onebit does it in
  // one pass writing out; this default decodes one message at a time.
  virtual void DecodeSum(const std::vector<at::Tensor>& messages, const std::vector<EncodeContext>& ctxs,
                         at::Tensor& out, double divisor) const;
  virtual at::Tensor EncodeWithFeedback(const at::Tensor& grad, const at::Tensor& residual,
                                        at::Tensor& next_residual, const EncodeContext& ctx) const;
};

}  // namespace lowbit::compress
