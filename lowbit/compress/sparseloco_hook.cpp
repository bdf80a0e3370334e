#include "lowbit/compress/sparseloco_hook.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <absl/strings/str_cat.h>

#include <cmath>
#include <vector>

#include "lowbit/base/error.h"
#include "lowbit/comm/work.h"
#include "lowbit/compress/chunked_topk.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::compress {
namespace {

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Note [SparseLoCo's payload]
// One rank's bytes, the same length on every rank (it depends only on the
// sizes): a float flag (1: this rank's input was not finite), 2^bits floats
// per tensor (the bins' values), an int16 offset within its chunk per kept
// value, the bins packed 8 / bits to a byte, zeros up to a multiple of 4.
struct Layout {
  int64_t tensors = 0, kept = 0, bins = 0;
  int64_t table_at = 4, index_at = 0, codes_at = 0, bytes = 0;
};

Layout MakeLayout(const std::vector<int64_t>& counts, int64_t bits) {
  Layout l;
  l.tensors = static_cast<int64_t>(counts.size());
  for (int64_t c : counts) l.kept += c;
  l.bins = int64_t{1} << bits;
  l.index_at = l.table_at + 4 * l.tensors * l.bins;
  l.codes_at = l.index_at + 2 * l.kept;
  l.bytes = RoundUp(l.codes_at + RoundUp(l.kept * bits, 8) / 8, 4);
  return l;
}

at::Tensor Pack(const at::Tensor& codes, int64_t bits) {
  const int64_t per = 8 / bits;
  at::Tensor c = codes.to(at::kInt);
  const int64_t padded = RoundUp(c.numel(), per);
  if (padded != c.numel()) c = at::cat({c, at::zeros({padded - c.numel()}, c.options())});
  c = c.view({-1, per});
  at::Tensor shifts = at::arange(per, c.options()).mul_(bits);
  return at::bitwise_left_shift(c, shifts).sum(1).to(at::kByte);
}

at::Tensor Unpack(const at::Tensor& packed, int64_t bits, int64_t count) {
  const int64_t per = 8 / bits;
  at::Tensor p = packed.to(at::kInt).unsqueeze(1);
  at::Tensor shifts = at::arange(per, p.options()).mul_(bits);
  return at::bitwise_right_shift(p, shifts)
      .bitwise_and_((1 << bits) - 1)
      .reshape({-1})
      .narrow(0, 0, count)
      .to(at::kLong);
}

}  // namespace

SparseLoCoHook::SparseLoCoHook(std::shared_ptr<comm::ProcessGroup> pg, SparseLoCoHookOptions options)
    : pg_(std::move(pg)), options_(options) {
  LOWBIT_CHECK(pg_ != nullptr, "SparseLoCoHook: process group is null");
  CheckChunkedTopK("SparseLoCoHook", options_.chunk(), options_.topk());
  const int64_t b = options_.bits();
  LOWBIT_CHECK(b == 1 || b == 2 || b == 4 || b == 8, "SparseLoCoHook: bits must be 1, 2, 4 or 8, got ", b);
  LOWBIT_CHECK(options_.decay() >= 0.0 && options_.decay() <= 1.0, "SparseLoCoHook: decay must be in [0, 1], got ",
               options_.decay());
  LOWBIT_CHECK(options_.range_sigmas() > 0.0 && std::isfinite(options_.range_sigmas()),
               "SparseLoCoHook: range_sigmas must be > 0, got ", options_.range_sigmas());
}

std::string SparseLoCoHook::Config() const {
  return absl::StrCat("sparseloco(chunk=", options_.chunk(), ",topk=", options_.topk(), ",bits=", options_.bits(),
                      ",decay=", options_.decay(), ",range_sigmas=", options_.range_sigmas(), ")");
}

int64_t SparseLoCoHook::PayloadBytes(const std::vector<int64_t>& numels) const {
  std::vector<int64_t> counts;
  for (int64_t n : numels) counts.push_back(ChunkedTopKCount(n, options_.chunk(), options_.topk()));
  return MakeLayout(counts, options_.bits()).bytes;
}

std::shared_ptr<comm::Work> SparseLoCoHook::RunHook(comm::GradBucket& bucket) {
  at::NoGradGuard no_grad;
  const int64_t chunk = options_.chunk(), k = options_.topk(), bits = options_.bits();
  const size_t n = bucket.gradients.size();
  LOWBIT_CHECK(bucket.parameter_names.size() == n && bucket.offsets.size() == n, "SparseLoCoHook: bucket ",
               bucket.index, " has ", n, " gradients but ", bucket.parameter_names.size(), " names and ",
               bucket.offsets.size(), " offsets");
  std::vector<int64_t> counts;
  for (const at::Tensor& g : bucket.gradients) counts.push_back(ChunkedTopKCount(g.numel(), chunk, k));
  const Layout l = MakeLayout(counts, bits);
  const at::TensorOptions fopt = bucket.buffer.options().dtype(at::kFloat);
  at::Tensor payload = at::zeros({l.bytes}, fopt.dtype(at::kByte));
  const bool bad = !kernels::AllFinite(bucket.buffer);
  if (bad) {
    payload.narrow(0, 0, 4).view(at::kFloat).fill_(1.0);
  } else {
    at::Tensor tables = payload.narrow(0, l.table_at, 4 * l.tensors * l.bins).view(at::kFloat);
    std::vector<at::Tensor> offsets, codes;
    const double half = static_cast<double>(l.bins / 2);
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& g = bucket.gradients[i];
      at::Tensor& e = error_[bucket.parameter_names[i]];
      if (!e.defined() || !e.sizes().equals(g.sizes())) e = at::zeros(g.sizes(), fopt);
      e.mul_(options_.decay()).add_(g);
      if (g.numel() == 0) continue;
      const at::Tensor flat = e.view({-1});
      const ChunkedSelection sel = ChunkedTopK(flat, chunk, k);
      // The bins: 2^bits equal widths over mean +- range_sigmas * std.
      const at::Tensor shift = sel.values.mean();
      const at::Tensor std = (sel.values - shift).pow(2).mean().sqrt();
      const at::Tensor width =
          at::clamp_min(std * (2.0 * options_.range_sigmas() / static_cast<double>(l.bins)), 1e-30);
      const at::Tensor code =
          at::clamp((sel.values - shift).div_(width).floor_().add_(half), 0, static_cast<double>(l.bins - 1))
              .to(at::kLong);
      const at::Tensor sum = at::zeros({l.bins}, fopt).index_add_(0, code, sel.values);
      const at::Tensor count = at::bincount(code, {}, l.bins).to(at::kFloat).clamp_min_(1.0);
      const at::Tensor table = sum.div_(count);
      tables.narrow(0, static_cast<int64_t>(i) * l.bins, l.bins).copy_(table);
      // e <- e - c: what is sent leaves the buffer.
      flat.index_add_(0, sel.index, table.index_select(0, code).neg_());
      offsets.push_back(sel.index - ChunkBase(g.numel(), chunk, k, sel.index.options()));
      codes.push_back(code);
    }
    if (!offsets.empty()) {
      payload.narrow(0, l.index_at, 2 * l.kept).view(at::kShort).copy_(at::cat(offsets));
      const at::Tensor packed = Pack(at::cat(codes), bits);
      payload.narrow(0, l.codes_at, packed.numel()).copy_(packed);
    }
  }
  const int world = pg_->Size();
  at::Tensor gathered = at::empty({world * l.bytes}, payload.options());
  std::shared_ptr<comm::Work> work = pg_->AllGather(gathered, payload);
  comm::GradBucket b = bucket;
  return std::make_shared<comm::ContinuationWork>([work, gathered, b, l, counts, chunk, k, bits, world] {
    work->Wait();
    at::NoGradGuard no_grad;
    at::Tensor out = b.buffer;
    out.zero_();
    bool any_bad = false;
    // Where each kept value lands in the bucket: the same on every rank.
    std::vector<at::Tensor> base;
    std::vector<int64_t> tensor_of;
    for (size_t i = 0; i < b.gradients.size(); ++i) {
      if (counts[i] == 0) continue;
      base.push_back(ChunkBase(b.gradients[i].numel(), chunk, k, out.options().dtype(at::kLong)).add_(b.offsets[i]));
    }
    at::Tensor tensor_index;
    {
      std::vector<at::Tensor> parts;
      for (size_t i = 0; i < counts.size(); ++i) {
        if (counts[i] > 0)
          parts.push_back(at::full({counts[i]}, static_cast<int64_t>(i), out.options().dtype(at::kLong)));
      }
      if (!parts.empty()) tensor_index = at::cat(parts).mul_(l.bins);
    }
    const at::Tensor where_base = base.empty() ? at::Tensor() : at::cat(base);
    for (int r = 0; r < world; ++r) {
      const at::Tensor mine = gathered.narrow(0, static_cast<int64_t>(r) * l.bytes, l.bytes);
      if (mine.narrow(0, 0, 4).view(at::kFloat).item<float>() != 0.0f) any_bad = true;
      if (any_bad || l.kept == 0) continue;
      const at::Tensor tables = mine.narrow(0, l.table_at, 4 * l.tensors * l.bins).view(at::kFloat);
      const at::Tensor offsets = mine.narrow(0, l.index_at, 2 * l.kept).view(at::kShort).to(at::kLong);
      const at::Tensor code = Unpack(mine.narrow(0, l.codes_at, RoundUp(l.kept * bits, 8) / 8), bits, l.kept);
      out.index_add_(0, where_base + offsets, tables.index_select(0, tensor_index + code));
    }
    out.div_(static_cast<double>(world));
    return std::vector<at::Tensor>{out, at::full({1}, any_bad ? 1.0 : 0.0, out.options())};
  });
}

comm::HookState SparseLoCoHook::StateDict() const {
  comm::HookState state;
  for (const auto& [name, e] : error_) state.emplace_back(absl::StrCat("error/", name), e.clone());
  return state;
}

void SparseLoCoHook::LoadStateDict(const comm::HookState& state) {
  std::map<std::string, at::Tensor> loaded;
  for (const auto& [name, t] : state) {
    LOWBIT_CHECK(name.rfind("error/", 0) == 0, "SparseLoCoHook: unexpected state entry '", name, "'");
    LOWBIT_CHECK(t.scalar_type() == at::kFloat, "SparseLoCoHook: state entry '", name, "' has dtype ", t.scalar_type(),
                 ", expected float");
    loaded[name.substr(6)] = t.clone();
  }
  error_ = std::move(loaded);
}

}  // namespace lowbit::compress
