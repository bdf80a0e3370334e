#include "lowbit/comm/two_level_hook.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "lowbit/base/error.h"
#include "lowbit/comm/consistency.h"
#include "lowbit/comm/work.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::comm {

TwoLevelHook::TwoLevelHook(std::shared_ptr<ProcessGroup> pg, const InnerFactory& make_inner, int ranks_per_host)
    : pg_(std::move(pg)), ranks_per_host_(ranks_per_host) {
  LOWBIT_CHECK(pg_ != nullptr, "TwoLevelHook: process group is null");
  LOWBIT_CHECK(make_inner != nullptr, "TwoLevelHook: the inner hook's factory is null");
  groups_ = SplitByHost(pg_, ranks_per_host);
  inner_ = make_inner(groups_.cross);
  LOWBIT_CHECK(inner_ != nullptr, "TwoLevelHook: the factory made no inner hook");
  CheckSameOnAllRanks(*pg_, {Config()}, "settings", "TwoLevelHook");
}

std::string TwoLevelHook::Name() const { return "two_level(" + inner_->Name() + ")"; }

std::string TwoLevelHook::Config() const {
  return c10::str("two_level(hosts=", hosts(), ",ranks_per_host=", ranks_per_host(), ",split=",
                  ranks_per_host_ == 0 ? std::string("shared memory") : c10::str("blocks of ", ranks_per_host_),
                  ",inner=", inner_->Config(), ")");
}

// Note [the two-level exchange]
// The bucket is padded to L shards of ceil(n / L); the local reduce-scatter
// (a mean over the host) starts at once, so it overlaps the rest of
// backward as DDP's buckets do; the cross-host exchange of this rank's shard
// and the local all-gather run when the bucket is waited for, in bucket
// order on every rank (the groups share one queue of collectives, so the
// order must be the same everywhere). Each shard travels back with the inner
// hook's non-finite flag, so every rank of the host learns every shard's.
std::shared_ptr<Work> TwoLevelHook::RunHook(GradBucket& bucket) {
  const int local = groups_.local->Size();
  if (local == 1) {  // one rank per host: the inner hook is the flat exchange
    std::shared_ptr<Work> across = inner_->RunHook(bucket);
    at::Tensor buffer = bucket.buffer;
    return std::make_shared<ContinuationWork>([across, buffer] {
      across->Wait();
      std::vector<at::Tensor> result = across->Result();
      at::Tensor out = result.empty() ? buffer : result[0];
      if (!out.is_same(buffer)) buffer.view({-1}).copy_(out.reshape({-1}));
      const bool bad = (result.size() > 1 && result[1].numel() > 0 && result[1].item<double>() != 0.0) ||
                       !kernels::AllFinite(buffer);
      return std::vector<at::Tensor>{buffer, at::full({1}, bad ? 1.0 : 0.0, buffer.options())};
    });
  }
  const int64_t n = bucket.buffer.numel();
  const int64_t shard = (n + local - 1) / local;
  at::Tensor input = bucket.buffer.reshape({-1});
  if (shard * local != n) input = at::constant_pad_nd(input, {0, shard * local - n});
  at::Tensor mine = at::empty({shard}, bucket.buffer.options());
  std::shared_ptr<Work> scatter = groups_.local->ReduceScatter(mine, input, ReduceOp::kAvg);
  GradBucket b = bucket;
  auto groups = groups_;
  auto inner = inner_;
  return std::make_shared<ContinuationWork>([scatter, mine, b, groups, inner, n, shard, local] {
    scatter->Wait();
    GradBucket part;
    part.index = b.index;
    part.is_last = b.is_last;
    part.buffer = mine;
    part.gradients = {mine.view({1, shard})};
    part.parameter_names = {c10::str("bucket", b.index, "/shard", groups.local->Rank())};
    part.offsets = {0};
    std::shared_ptr<Work> across = inner->RunHook(part);
    across->Wait();
    const std::vector<at::Tensor> result = across->Result();
    at::Tensor send = at::empty({shard + 1}, mine.options());
    send.narrow(0, 0, shard).copy_(result.empty() ? mine : result[0].reshape({-1}));
    const bool flagged = result.size() > 1 && result[1].numel() > 0 && result[1].item<double>() != 0.0;
    send[shard].fill_(flagged ? 1.0 : 0.0);
    at::Tensor gathered = at::empty({local * (shard + 1)}, mine.options());
    groups.local->AllGather(gathered, send)->Wait();
    const at::Tensor rows = gathered.view({local, shard + 1});
    at::Tensor out = b.buffer;
    out.view({-1}).copy_(rows.narrow(1, 0, shard).reshape({-1}).narrow(0, 0, n));
    // Every rank holds the same gathered bytes, so every rank decides alike.
    const bool bad = rows.select(1, shard).max().item<double>() != 0.0 || !kernels::AllFinite(out);
    return std::vector<at::Tensor>{out, at::full({1}, bad ? 1.0 : 0.0, out.options())};
  });
}

}  // namespace lowbit::comm
