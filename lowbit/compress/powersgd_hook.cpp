#include "lowbit/compress/powersgd_hook.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "lowbit/base/error.h"
#include "lowbit/compress/compression_hook.h"
#include "lowbit/compress/internal/hook_state.h"
#include "lowbit/kernels/internal/counter_rng.h"

namespace lowbit::compress {
namespace {

// Q0 in [-0.5, 0.5), a pure function of the key, the same on every rank
// (drawn on the CPU).
at::Tensor RandomMatrix(uint64_t key, int64_t rows, int64_t cols) {
  at::Tensor q = at::empty({rows, cols}, at::kFloat);
  float* p = q.data_ptr<float>();
  for (int64_t i = 0; i < rows * cols; ++i) p[i] = kernels::Uniform(key, i) - 0.5f;
  return q;
}

// Orthonormalises the columns of each matrix in `p` (batch, n, r) in place,
// as PyTorch's _orthogonalize_gram_schmidt, in fp32.
void OrthogonaliseColumns(at::Tensor& p) {
  const int64_t r = p.size(2);
  for (int64_t i = 0; i < r; ++i) {
    at::Tensor col = p.narrow(2, i, 1);
    col.div_(col.norm(2, {1}, /*keepdim=*/true).add_(1e-8));
    if (i + 1 < r) {
      at::Tensor rest = p.narrow(2, i + 1, r - i - 1);
      rest.sub_((col * rest).sum({1}, /*keepdim=*/true) * col);
    }
  }
}

}  // namespace

int64_t PowerSgdRank(at::IntArrayRef shape, int64_t rank, double min_compression_rate) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (shape.size() < 2 || numel == 0 || rank <= 0) return 0;
  const int64_t n = shape[0], m = numel / n;
  const int64_t r = std::min<int64_t>({n, m, rank});
  return static_cast<double>((n + m) * r) * min_compression_rate < static_cast<double>(n * m) ? r : 0;
}

struct PowerSgdHook::Pending {
  comm::GradBucket bucket;
  int64_t step = 0;
  bool compressing = false;
  std::vector<size_t> plain;
  at::Tensor first;  // P factors, then plain values, then the non-finite flag
  int64_t p_numel = 0;
  std::shared_ptr<comm::Work> first_work;
  // Matrices grouped by (n, m, r); members are parameter indices.
  struct Group {
    int64_t n, m, r;
    std::vector<size_t> members;
    at::Tensor M, Q, P;
  };
  std::vector<Group> groups;
};

PowerSgdHook::PowerSgdHook(std::shared_ptr<comm::ProcessGroup> pg, PowerSgdOptions options)
    : pg_(std::move(pg)), options_(options) {
  LOWBIT_CHECK(pg_ != nullptr, "PowerSgdHook: process group is null");
  LOWBIT_CHECK(options_.rank >= 1, "powersgd rank must be >= 1, got ", options_.rank);
  LOWBIT_CHECK(options_.start_iter >= 0, "powersgd start_iter must be >= 0, got ", options_.start_iter);
  LOWBIT_CHECK(options_.min_compression_rate >= 1.0, "powersgd min_compression_rate must be >= 1, got ",
               options_.min_compression_rate);
}

std::string PowerSgdHook::Config() const {
  return absl::StrCat("powersgd(rank=", options_.rank, ",start_iter=", options_.start_iter,
                      ",warm_start=", options_.warm_start, ",min_compression_rate=", options_.min_compression_rate,
                      ",error_feedback=", options_.error_feedback, ",seed=", options_.seed, ")");
}

void PowerSgdHook::SetLayerRank(const std::string& name, int rank) {
  LOWBIT_CHECK(rank >= 0, "powersgd rank for '", name, "' must be >= 0 (0: uncompressed), got ", rank);
  layer_rank_[name] = rank;
}

std::shared_ptr<comm::Work> PowerSgdHook::RunHook(comm::GradBucket& bucket) {
  if (bucket.index == 0) ++step_;
  auto job = std::make_shared<Pending>();
  job->bucket = bucket;
  job->step = step_;
  job->compressing = step_ > options_.start_iter;
  const bool local_bad = !at::isfinite(bucket.buffer).all().item<bool>();

  std::map<std::tuple<int64_t, int64_t, int64_t>, size_t> group_of;
  for (size_t i = 0; i < bucket.gradients.size(); ++i) {
    const at::Tensor& g = bucket.gradients[i];
    auto layer = layer_rank_.find(bucket.parameter_names[i]);
    const int rank = layer == layer_rank_.end() ? options_.rank : layer->second;
    const int64_t r = job->compressing ? PowerSgdRank(g.sizes(), rank, options_.min_compression_rate) : 0;
    if (r == 0) {
      job->plain.push_back(i);
      continue;
    }
    const int64_t n = g.size(0), m = g.numel() / n;
    auto [it, added] = group_of.try_emplace({n, m, r}, job->groups.size());
    if (added) job->groups.push_back({n, m, r, {}, {}, {}, {}});
    job->groups[it->second].members.push_back(i);
  }

  std::vector<at::Tensor> parts;
  for (auto& group : job->groups) {
    std::vector<at::Tensor> ms, qs;
    for (size_t i : group.members) {
      const std::string& name = bucket.parameter_names[i];
      FeedbackState& state = state_[name];
      at::Tensor m = bucket.gradients[i].reshape({group.n, group.m}).to(at::kFloat);
      if (local_bad) m = at::zeros_like(m);  // the step is discarded; keep NaN out of P
      auto err = state.find("error");
      if (options_.error_feedback && err != state.end()) m = m + err->second.view({group.n, group.m});
      ms.push_back(m);
      auto q = state.find("Q");
      const bool warm = options_.warm_start && q != state.end() && q->second.size(0) == group.m;
      if (warm && q->second.size(1) == group.r) {
        qs.push_back(q->second);
      } else {
        const uint64_t key = kernels::MixKey(kernels::MixKey(options_.seed, NameKey(name)),
                                             options_.warm_start ? 0 : static_cast<uint64_t>(step_));
        at::Tensor fresh = RandomMatrix(key, group.m, group.r).to(m.device());
        if (warm) {  // the rank changed: keep the columns both ranks share
          const int64_t keep = std::min<int64_t>(group.r, q->second.size(1));
          fresh.narrow(1, 0, keep).copy_(q->second.narrow(1, 0, keep));
        }
        qs.push_back(fresh);
      }
    }
    group.M = at::stack(ms);
    group.Q = at::stack(qs);
    group.P = at::bmm(group.M, group.Q);
    parts.push_back(group.P.reshape({-1}));
    job->p_numel += group.P.numel();
  }
  for (size_t i : job->plain) parts.push_back(bucket.gradients[i].reshape({-1}).to(at::kFloat));
  parts.push_back(at::full({1}, local_bad ? 1.0f : 0.0f, at::kFloat));
  job->first = at::cat(parts);
  job->first_work = pg_->AllReduce(job->first, comm::ReduceOp::kSum);
  return std::make_shared<comm::ContinuationWork>([this, job] { return Finish(*job); });
}

std::vector<at::Tensor> PowerSgdHook::Finish(Pending& job) {
  job.first_work->Wait();
  const double world = pg_->Size();
  int64_t offset = 0;
  std::vector<at::Tensor> qs;
  for (auto& group : job.groups) {
    at::Tensor p = job.first.narrow(0, offset, group.P.numel()).view(group.P.sizes()).clone();
    offset += group.P.numel();
    OrthogonaliseColumns(p);
    group.P = p;
    group.Q = at::bmm(group.M.transpose(1, 2), p);
    qs.push_back(group.Q.reshape({-1}));
  }
  if (!qs.empty()) {
    at::Tensor second = at::cat(qs);
    pg_->AllReduce(second, comm::ReduceOp::kSum)->Wait();
    int64_t q_offset = 0;
    for (auto& group : job.groups) {
      group.Q = second.narrow(0, q_offset, group.Q.numel()).view(group.Q.sizes()).div(world);
      q_offset += group.Q.numel();
    }
  }
  at::Tensor& buffer = job.bucket.buffer;
  if (job.first[job.first.numel() - 1].item<float>() > 0.0f) {
    buffer.fill_(std::numeric_limits<float>::quiet_NaN());
    return {buffer, at::ones({1}, at::kByte)};
  }
  for (size_t i : job.plain) {
    at::Tensor& g = job.bucket.gradients[i];
    g.copy_(job.first.narrow(0, offset, g.numel()).view_as(g).div(world));
    offset += g.numel();
  }
  for (auto& group : job.groups) {
    const at::Tensor estimate = at::bmm(group.P, group.Q.transpose(1, 2));
    for (size_t b = 0; b < group.members.size(); ++b) {
      const size_t i = group.members[b];
      FeedbackState& state = state_[job.bucket.parameter_names[i]];
      const at::Tensor e = estimate[b];
      job.bucket.gradients[i].copy_(e.reshape(job.bucket.gradients[i].sizes()));
      if (options_.error_feedback) state["error"] = (group.M[b] - e).reshape({-1}).clone();
      if (options_.warm_start) state["Q"] = group.Q[b].clone();
    }
  }
  return {buffer, at::zeros({1}, at::kByte)};
}

comm::HookState PowerSgdHook::StateDict() const { return internal::SaveHookState(pg_->Size(), step_, state_); }

void PowerSgdHook::LoadStateDict(const comm::HookState& state) {
  internal::LoadHookState(state, pg_->Size(), Name(), &state_, &step_);
}

}  // namespace lowbit::compress
