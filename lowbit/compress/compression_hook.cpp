#include "lowbit/compress/compression_hook.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <absl/strings/str_cat.h>
#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <limits>

#include "lowbit/base/error.h"
#include "lowbit/compress/internal/hook_state.h"
#include "lowbit/compress/internal/serial_worker.h"
#include "lowbit/kernels/internal/counter_rng.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::compress {

// Note [Compressed exchange]
// RunHook runs while backward goes on: it flattens the uncompressed tensors
// (plus this rank's non-finite flag) into one allreduce, prepares each
// compressed tensor's input x through the error-feedback policy, encodes it,
// and starts the exchange. The rest runs when DDP waits for the bucket
// (ContinuationWork): decoding, for the two-phase exchange the server stage
// and its all-gather, the estimates, and the commit of the new state. DDP
// launches buckets in order and waits for them in order, so every rank
// issues the same collectives in the same order.
//
// The two-phase exchange (DeepSpeed's compressed_allreduce, Tang et al.
// 2021, "1-bit Adam", Algorithm 1) concatenates the bucket's compressed
// inputs, pads them to P chunks of c elements (c a multiple of 8), encodes
// chunk j for rank j and all-to-alls them; rank j decodes and averages its
// chunk, adds its server error, re-encodes (server error = y - decode), and
// all-gathers the P re-encoded chunks. Each rank sends about 2N/P encoded
// elements instead of 2N for a ring allreduce.
//
// The decoded messages are summed in rank order, so the result is the same
// on every rank and equal to the same arithmetic done in one process.
//
// Note [Encoding off the backward thread]
// With options.overlap, RunHook only decides which tensors are compressed
// (the step count and per-layer choices are read on the caller's thread) and
// posts the rest (Launch: non-finite check, error feedback, encoding, and
// starting the collectives) to the hook's own SerialWorker, so backward goes
// on while a bucket is encoded. The worker launches buckets in the order DDP
// handed them over, so every rank still issues the same collectives in the
// same order. A bucket's continuation first drains the worker: DDP waits only
// after every bucket was handed over, so by then all launch collectives are
// issued, and only then may the continuation issue its own (the two-phase
// all-gather) without racing the worker's. Launch and Finish never run at
// once, so the feedback state needs no lock. An error in Launch is kept with
// its bucket and rethrown by that bucket's Wait().

uint64_t NameKey(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

struct CompressionHook::Pending {
  comm::GradBucket bucket;
  int64_t step = 0;
  std::vector<size_t> compressed;
  std::vector<std::shared_ptr<Compressor>> compressors;  // per compressed tensor
  std::vector<size_t> plain;
  at::Tensor plain_buffer;
  at::Tensor plain_wire;  // plain_fp16: what the allreduce sums
  std::shared_ptr<comm::Work> plain_work;
  bool local_bad = false;
  std::vector<at::Tensor> grads;
  std::vector<at::Tensor> inputs;
  std::vector<at::Tensor> sent;
  // Classic error feedback fused with encoding (EncodeWithFeedback): the
  // inputs are then the gradients, and each tensor's old residual is here.
  bool fused_feedback = false;
  bool mean_in_gradient = false;  // the means were decoded into the gradients
  std::vector<at::Tensor> residuals;
  std::vector<at::Tensor> mean;
  std::vector<FeedbackState> next;
  std::shared_ptr<comm::Work> work;
  std::exception_ptr launch_error;  // from Launch on the worker
  // kAllReduce: the summed messages and each one's length.
  at::Tensor message;
  std::vector<int64_t> message_numel;
  // kTwoPhase
  int64_t total = 0;
  int64_t chunk = 0;
  int64_t chunk_bytes = 0;
  std::string server_key;
  FeedbackState server_next;
};

CompressionHook::CompressionHook(std::shared_ptr<comm::ProcessGroup> pg, CompressionHookOptions options)
    : pg_(std::move(pg)), options_(std::move(options)) {
  LOWBIT_CHECK(pg_ != nullptr, "CompressionHook: process group is null");
  LOWBIT_CHECK(options_.compressor != nullptr, "CompressionHook: compressor is null");
  if (!options_.error_feedback) options_.error_feedback = MakeErrorFeedback("ef");
  exchange_ = options_.exchange.value_or(options_.compressor->DefaultExchange());
  LOWBIT_CHECK(options_.compressor->Supports(exchange_), "CompressionHook: compressor ", options_.compressor->Name(),
               " cannot use the ", ToString(exchange_), " exchange");
  LOWBIT_CHECK(exchange_ != Exchange::kTwoPhase || options_.compressor->FixedMessageBytes(64) >= 0,
               "CompressionHook: the two-phase exchange needs fixed-size messages");
  LOWBIT_CHECK(options_.min_compress_numel >= 0, "CompressionHook: min_compress_numel must be >= 0, got ",
               options_.min_compress_numel);
  LOWBIT_CHECK(options_.momentum >= 0.0 && options_.momentum < 1.0, "CompressionHook: momentum must be in [0, 1), got ",
               options_.momentum);
  LOWBIT_CHECK(options_.start_iter >= 0, "CompressionHook: start_iter must be >= 0, got ", options_.start_iter);
  LOWBIT_CHECK(options_.clip_norm >= 0.0, "CompressionHook: clip_norm must be >= 0, got ", options_.clip_norm);
}

void CompressionHook::SetLayerCompressor(const std::string& name, std::shared_ptr<Compressor> compressor) {
  LOWBIT_CHECK(exchange_ != Exchange::kTwoPhase, "CompressionHook: per-layer compressors (for '", name,
               "') need the allgather or allreduce exchange, not twophase");
  LOWBIT_CHECK(compressor == nullptr || compressor->Supports(exchange_), "CompressionHook: compressor ",
               compressor ? compressor->Config() : "", " for '", name, "' cannot use the ", ToString(exchange_),
               " exchange");
  layer_compressor_[name] = std::move(compressor);
}

std::shared_ptr<Compressor> CompressionHook::CompressorFor(const std::string& name, const at::Tensor& grad) const {
  if (grad.numel() == 0) return nullptr;
  auto it = layer_compressor_.find(name);
  if (it != layer_compressor_.end()) return it->second;
  const bool compress = (grad.dim() >= 2 || options_.compress_1d) && grad.numel() >= options_.min_compress_numel;
  return compress ? options_.compressor : nullptr;
}

std::string CompressionHook::Name() const { return options_.compressor->Name(); }

std::string CompressionHook::Config() const {
  return absl::StrCat("compression(", options_.compressor->Config(), ",ef=", options_.error_feedback->Config(),
                      ",exchange=", ToString(exchange_), ",min_compress_numel=", options_.min_compress_numel,
                      ",compress_1d=", options_.compress_1d, options_.plain_fp16 ? ",plain=fp16" : "",
                      ",seed=", options_.seed, ",momentum=", options_.momentum, ",clip_norm=", options_.clip_norm,
                      ",start_iter=", options_.start_iter, ")");
}

EncodeContext CompressionHook::Context(int rank, uint64_t tensor_key, uint64_t phase, int64_t step) const {
  using kernels::MixKey;
  EncodeContext ctx;
  ctx.step = step;
  const uint64_t base = MixKey(MixKey(options_.seed, static_cast<uint64_t>(step)), tensor_key);
  ctx.key = MixKey(MixKey(base, static_cast<uint64_t>(rank) + 1), phase);
  ctx.shared_key = MixKey(base, phase);
  return ctx;
}

CompressionHook::~CompressionHook() = default;

std::shared_ptr<comm::Work> CompressionHook::RunHook(comm::GradBucket& bucket) {
  if (bucket.index == 0) ++step_;
  auto job = std::make_shared<Pending>();
  job->bucket = bucket;
  job->step = step_;

  for (size_t i = 0; i < bucket.gradients.size(); ++i) {
    std::shared_ptr<Compressor> c;
    if (job->step > options_.start_iter) c = CompressorFor(bucket.parameter_names[i], bucket.gradients[i]);
    if (c) {
      job->compressed.push_back(i);
      job->compressors.push_back(std::move(c));
    } else {
      job->plain.push_back(i);
    }
  }
  if (!options_.overlap || pg_->Size() == 1) {
    Launch(job.get());
    return std::make_shared<comm::ContinuationWork>([this, job] { return Finish(*job); });
  }
  if (!worker_) worker_ = std::make_unique<internal::SerialWorker>(at::get_num_threads());
  worker_->Post([this, job] {
    try {
      const c10::OptionalDeviceGuard device(job->bucket.buffer.device());
      Launch(job.get());
    } catch (...) {
      job->launch_error = std::current_exception();
    }
  });
  return std::make_shared<comm::ContinuationWork>([this, job] {
    worker_->Drain();
    if (job->launch_error) std::rethrow_exception(job->launch_error);
    return Finish(*job);
  });
}

void CompressionHook::Launch(Pending* job) {
  const comm::GradBucket& bucket = job->bucket;
  const int world = pg_->Size();
  job->local_bad = !kernels::AllFinite(bucket.buffer);
  int64_t plain_numel = 0;
  for (size_t i : job->plain) plain_numel += bucket.gradients[i].numel();
  job->plain_buffer = at::empty({plain_numel + 1}, bucket.buffer.options().dtype(at::kFloat));
  int64_t offset = 0;
  for (size_t i : job->plain) {
    const int64_t n = bucket.gradients[i].numel();
    job->plain_buffer.narrow(0, offset, n).copy_(bucket.gradients[i].reshape({-1}));
    offset += n;
  }
  job->plain_buffer[plain_numel].fill_(job->local_bad ? 1.0 : 0.0);
  if (options_.plain_fp16) {
    // x / P, as the fp16 hook: a sum cannot overflow where the mean would not.
    job->plain_wire = job->plain_buffer.div(static_cast<double>(world)).to(at::kHalf);
    job->plain_work = pg_->AllReduce(job->plain_wire, comm::ReduceOp::kSum);
  } else {
    job->plain_work = pg_->AllReduce(job->plain_buffer, comm::ReduceOp::kSum);
  }

  // Inputs to compress: clipped, momentum-corrected, through error feedback.
  // Classic error feedback on the all-gather exchange goes into the encoder
  // (one pass over gradient and residual) unless DGC's momentum masking needs
  // what was sent.
  job->fused_feedback = exchange_ == Exchange::kAllGather && options_.error_feedback->Name() == "ef" &&
                        options_.momentum == 0.0;
  for (size_t i : job->compressed) {
    const std::string& name = bucket.parameter_names[i];
    const FeedbackState& state = state_[name];
    FeedbackState next;
    at::Tensor g = bucket.gradients[i].reshape({-1}).to(at::kFloat);
    if (job->local_bad) g = at::zeros_like(g);  // discarded below; keeps encoders away from NaN
    if (options_.clip_norm > 0.0) {
      const double limit = options_.clip_norm / std::sqrt(static_cast<double>(world));
      const double norm = g.norm().item<double>();
      if (norm > limit) g = g * (limit / norm);
    }
    if (options_.momentum > 0.0) {
      auto u = state.find("u");
      g = u == state.end() ? g.clone() : u->second * options_.momentum + g;
      next["u"] = g;
    }
    if (job->fused_feedback) {
      auto e = state.find("e");
      job->residuals.push_back(e == state.end() ? at::Tensor() : e->second);
      job->inputs.push_back(g.contiguous());
    } else {
      job->inputs.push_back(options_.error_feedback->Input(g, state).contiguous());
    }
    job->grads.push_back(g);
    job->next.push_back(std::move(next));
  }
  if (!job->compressed.empty()) {
    switch (exchange_) {
      case Exchange::kAllReduce:
        EncodeAllReduce(*job);
        break;
      case Exchange::kAllGather:
        EncodeAllGather(*job);
        break;
      case Exchange::kTwoPhase:
        EncodeTwoPhase(*job);
        break;
    }
    for (size_t j = 0; j < job->compressed.size() && !job->fused_feedback; ++j) {
      const std::string& name = bucket.parameter_names[job->compressed[j]];
      options_.error_feedback->AfterEncode(job->grads[j], job->inputs[j], job->sent[j], state_[name], job->next[j]);
      auto u = job->next[j].find("u");
      if (u != job->next[j].end()) u->second.masked_fill_(job->sent[j] != 0, 0.0);  // DGC momentum masking
    }
  }
}

void CompressionHook::EncodeAllReduce(Pending& job) {
  // Messages are encoded from x / P so that a fp16 sum cannot overflow where
  // the mean would not; `sent` is what this rank contributed, in x's units.
  const double world = pg_->Size();
  std::vector<at::Tensor> messages;
  for (size_t j = 0; j < job.compressed.size(); ++j) {
    const uint64_t key = NameKey(job.bucket.parameter_names[job.compressed[j]]);
    const EncodeContext ctx = Context(pg_->Rank(), key, 0, job.step);
    const Compressor& c = *job.compressors[j];
    at::Tensor msg = c.Encode(job.inputs[j] / world, ctx);
    at::Tensor sent = at::empty_like(job.inputs[j]);
    c.Decode(msg, ctx, sent, /*accumulate=*/false);
    job.sent.push_back(sent.mul_(world));
    job.message_numel.push_back(msg.numel());
    messages.push_back(msg.reshape({-1}));
  }
  job.message = at::cat(messages);
  job.work = pg_->AllReduce(job.message, comm::ReduceOp::kSum);
}

void CompressionHook::DecodeAllReduce(Pending& job) {
  int64_t offset = 0;
  for (size_t j = 0; j < job.compressed.size(); ++j) {
    const uint64_t key = NameKey(job.bucket.parameter_names[job.compressed[j]]);
    at::Tensor mean = at::empty_like(job.inputs[j]);
    job.compressors[j]->Decode(job.message.narrow(0, offset, job.message_numel[j]),
                               Context(pg_->Rank(), key, 0, job.step), mean, /*accumulate=*/false);
    offset += job.message_numel[j];
    job.mean.push_back(mean);
  }
}

void CompressionHook::EncodeAllGather(Pending& job) {
  // Message: int64 byte lengths of the tensors' messages, then the messages.
  const size_t count = job.compressed.size();
  at::Tensor lengths = at::empty({static_cast<int64_t>(count)}, at::kLong);
  std::vector<at::Tensor> parts{lengths.view(at::kByte)};
  for (size_t j = 0; j < count; ++j) {
    const uint64_t key = NameKey(job.bucket.parameter_names[job.compressed[j]]);
    const EncodeContext ctx = Context(pg_->Rank(), key, 0, job.step);
    const Compressor& c = *job.compressors[j];
    at::Tensor msg;
    if (job.fused_feedback) {
      at::Tensor next_residual = at::empty_like(job.inputs[j]);
      msg = c.EncodeWithFeedback(job.inputs[j], job.residuals[j], next_residual, ctx);
      job.next[j]["e"] = next_residual;
      job.sent.emplace_back();  // not needed: the residual is done
    } else {
      msg = c.Encode(job.inputs[j], ctx);
      at::Tensor sent = at::empty_like(job.inputs[j]);
      c.Decode(msg, ctx, sent, /*accumulate=*/false);
      job.sent.push_back(sent);
    }
    lengths[static_cast<int64_t>(j)] = msg.numel();
    parts.push_back(msg.reshape({-1}));
  }
  job.work = pg_->AllGatherV(at::cat(parts));
}

void CompressionHook::DecodeAllGather(Pending& job) {
  const std::vector<at::Tensor> all = job.work->Result();
  const int64_t count = static_cast<int64_t>(job.compressed.size());
  const int world = pg_->Size();
  // Every rank's message for each tensor, checked, then each tensor's mean
  // decoded in one call (for onebit one pass): straight into the gradient
  // where the estimate is the mean (no error feedback or the classic one).
  std::vector<std::vector<at::Tensor>> messages(job.compressed.size());
  std::vector<std::vector<EncodeContext>> contexts(job.compressed.size());
  for (int r = 0; r < world; ++r) {
    const at::Tensor& bytes = all[r];
    LOWBIT_CHECK(bytes.numel() >= 8 * count, "compression hook: rank ", r, " sent ", bytes.numel(),
                 " bytes, fewer than its header of ", 8 * count);
    const at::Tensor lengths = bytes.narrow(0, 0, 8 * count).clone().view(at::kLong);
    const int64_t* len = lengths.data_ptr<int64_t>();
    int64_t offset = 8 * count;
    for (int64_t j = 0; j < count; ++j) {
      LOWBIT_CHECK(len[j] >= 0 && offset + len[j] <= bytes.numel(), "compression hook: rank ", r,
                   " sent a malformed message (tensor ", j, " claims ", len[j], " bytes)");
      const uint64_t key = NameKey(job.bucket.parameter_names[job.compressed[j]]);
      messages[j].push_back(bytes.narrow(0, offset, len[j]));
      contexts[j].push_back(Context(r, key, 0, job.step));
      offset += len[j];
    }
  }
  const std::string policy = options_.error_feedback->Name();
  job.mean_in_gradient = policy == "none" || policy == "ef";
  for (size_t i : job.compressed) {
    const at::Tensor& g = job.bucket.gradients[i];
    job.mean_in_gradient = job.mean_in_gradient && g.scalar_type() == at::kFloat && g.is_contiguous();
  }
  for (int64_t j = 0; j < count; ++j) {
    at::Tensor out = job.mean_in_gradient ? job.bucket.gradients[job.compressed[j]].view({-1})
                                          : at::empty_like(job.inputs[j]);
    job.compressors[j]->DecodeSum(messages[j], contexts[j], out, static_cast<double>(world));
    job.mean.push_back(out);
  }
}

void CompressionHook::EncodeTwoPhase(Pending& job) {
  const int world = pg_->Size();
  for (const at::Tensor& x : job.inputs) job.total += x.numel();
  job.chunk = ((job.total + world - 1) / world + 7) / 8 * 8;
  job.server_key = "bucket:" + job.bucket.parameter_names[job.compressed.front()];
  at::Tensor padded = at::zeros({job.chunk * world}, job.inputs.front().options());
  int64_t offset = 0;
  for (const at::Tensor& x : job.inputs) {
    padded.narrow(0, offset, x.numel()).copy_(x);
    offset += x.numel();
  }
  job.chunk_bytes = options_.compressor->FixedMessageBytes(job.chunk);
  at::Tensor send = at::empty({job.chunk_bytes * world}, padded.options().dtype(at::kByte));
  at::Tensor sent = at::empty_like(padded);
  const uint64_t key = NameKey(job.server_key);
  for (int j = 0; j < world; ++j) {
    const EncodeContext ctx = Context(pg_->Rank(), key, 1 + static_cast<uint64_t>(j), job.step);
    at::Tensor msg = options_.compressor->Encode(padded.narrow(0, j * job.chunk, job.chunk), ctx);
    TORCH_INTERNAL_ASSERT(msg.numel() == job.chunk_bytes, "two-phase message size changed");
    send.narrow(0, j * job.chunk_bytes, job.chunk_bytes).copy_(msg);
    at::Tensor part = sent.narrow(0, j * job.chunk, job.chunk);
    options_.compressor->Decode(msg, ctx, part, /*accumulate=*/false);
  }
  offset = 0;
  for (const at::Tensor& x : job.inputs) {
    job.sent.push_back(sent.narrow(0, offset, x.numel()));
    offset += x.numel();
  }
  job.message = at::empty_like(send);
  job.work = pg_->AllToAll(job.message, send);
}

void CompressionHook::DecodeTwoPhase(Pending& job) {
  const int world = pg_->Size();
  const int rank = pg_->Rank();
  const uint64_t key = NameKey(job.server_key);
  at::Tensor avg = at::zeros({job.chunk}, job.inputs.front().options());
  for (int r = 0; r < world; ++r) {
    options_.compressor->Decode(job.message.narrow(0, r * job.chunk_bytes, job.chunk_bytes),
                                Context(r, key, 1 + static_cast<uint64_t>(rank), job.step), avg, /*accumulate=*/true);
  }
  avg.div_(static_cast<double>(world));
  // Server error feedback, unless the policy is "none".
  const bool server_feedback = options_.error_feedback->Name() != "none";
  const FeedbackState& server_state = state_[job.server_key];
  auto err = server_state.find("server_error");
  if (server_feedback && err != server_state.end() && err->second.numel() == job.chunk) avg.add_(err->second);
  const EncodeContext server_ctx = Context(rank, key, 0, job.step);
  at::Tensor msg = options_.compressor->Encode(avg, server_ctx);
  if (server_feedback) {
    at::Tensor decoded = at::empty_like(avg);
    options_.compressor->Decode(msg, server_ctx, decoded, /*accumulate=*/false);
    job.server_next["server_error"] = avg - decoded;
  }
  at::Tensor gathered = at::empty({job.chunk_bytes * world}, msg.options());
  pg_->AllGather(gathered, msg)->Wait();
  at::Tensor mean = at::empty({job.chunk * world}, avg.options());
  for (int r = 0; r < world; ++r) {
    at::Tensor part = mean.narrow(0, r * job.chunk, job.chunk);
    options_.compressor->Decode(gathered.narrow(0, r * job.chunk_bytes, job.chunk_bytes), Context(r, key, 0, job.step), part,
                                /*accumulate=*/false);
  }
  int64_t offset = 0;
  for (const at::Tensor& x : job.inputs) {
    job.mean.push_back(mean.narrow(0, offset, x.numel()));
    offset += x.numel();
  }
}

std::vector<at::Tensor> CompressionHook::Finish(Pending& job) {
  if (job.work) {
    job.work->Wait();
    switch (exchange_) {
      case Exchange::kAllReduce:
        DecodeAllReduce(job);
        break;
      case Exchange::kAllGather:
        DecodeAllGather(job);
        break;
      case Exchange::kTwoPhase:
        DecodeTwoPhase(job);
        break;
    }
  }
  job.plain_work->Wait();
  if (options_.plain_fp16) job.plain_buffer.copy_(job.plain_wire);  // already the mean
  const int64_t plain_numel = job.plain_buffer.numel() - 1;
  const bool bad = job.plain_buffer[plain_numel].item<float>() > 0.0f;
  at::Tensor& buffer = job.bucket.buffer;
  if (bad) {
    buffer.fill_(std::numeric_limits<float>::quiet_NaN());
    return {buffer, at::ones({1}, at::kByte)};
  }
  if (!options_.plain_fp16) job.plain_buffer.div_(static_cast<double>(pg_->Size()));
  int64_t offset = 0;
  for (size_t i : job.plain) {
    at::Tensor& g = job.bucket.gradients[i];
    g.copy_(job.plain_buffer.narrow(0, offset, g.numel()).view_as(g));
    offset += g.numel();
  }
  for (size_t j = 0; j < job.compressed.size(); ++j) {
    const size_t i = job.compressed[j];
    FeedbackState& state = state_[job.bucket.parameter_names[i]];
    if (job.mean_in_gradient) {  // decoded in place: the estimate is the mean
      for (auto& [name, tensor] : job.next[j]) state[name] = tensor;
      continue;
    }
    const at::Tensor estimate = options_.error_feedback->Estimate(job.mean[j], state, job.next[j]);
    job.bucket.gradients[i].copy_(estimate.view_as(job.bucket.gradients[i]));
    for (auto& [name, tensor] : job.next[j]) state[name] = tensor;
  }
  for (auto& [name, tensor] : job.server_next) state_[job.server_key][name] = tensor;
  return {buffer, at::zeros({1}, at::kByte)};
}

comm::HookState CompressionHook::StateDict() const { return internal::SaveHookState(pg_->Size(), step_, state_); }

void CompressionHook::LoadStateDict(const comm::HookState& state) {
  internal::LoadHookState(state, pg_->Size(), Name(), &state_, &step_);
}

}  // namespace lowbit::compress
