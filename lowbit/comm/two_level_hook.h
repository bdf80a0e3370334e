// A two-level exchange for jobs on several hosts (ZeRO++'s qgZ, CGX): ranks
// on one host first average uncompressed among themselves over the fast
// local link, each keeping one shard of the bucket (a reduce-scatter through
// the host group of comm::SplitByHost); only the shards cross hosts, each
// among the ranks holding the same shard on every host, through any comm
// hook (compressed or not); then each host gathers its shards back (an
// all-gather). Per rank, the bytes that cross hosts are the inner hook's on
// 1/L of the bucket (L ranks per host).
//
//   auto hook = std::make_shared<lowbit::comm::TwoLevelHook>(pg, [](std::shared_ptr<ProcessGroup> cross) {
//     return lowbit::compress::MakeCommHook(cross, "qsgd", {{"bits", "4"}});
//   });
//   ddp.RegisterCommHook(hook);   // or DiLoCoOptions().exchange_hook(hook)
//
// With an uncompressed inner hook the result is the flat mean up to float
// reassociation (a mean of means). The inner hook's state (error feedback)
// is per shard, named "bucket<b>/shard<l>", and saved as the hook's state.
// Result(): {the bucket's buffer, a flag: 1 when some rank's input, or the
// inner exchange, was not finite}.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "lowbit/comm/comm_hook.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::comm {

class TwoLevelHook final : public CommHook {
 public:
  using InnerFactory = std::function<std::shared_ptr<CommHook>(std::shared_ptr<ProcessGroup> cross)>;
  // ranks_per_host: 0 detects hosts (ranks sharing memory); > 0 takes blocks
  // of that many consecutive ranks (a launcher that places ranks so).
  // Collective: every rank constructs it.
  TwoLevelHook(std::shared_ptr<ProcessGroup> pg, const InnerFactory& make_inner, int ranks_per_host = 0);

  std::string Name() const override;
  std::string Config() const override;
  std::shared_ptr<Work> RunHook(GradBucket& bucket) override;
  HookState StateDict() const override { return inner_->StateDict(); }
  void LoadStateDict(const HookState& state) override { inner_->LoadStateDict(state); }
  void SetOverlap(bool on) override { inner_->SetOverlap(on); }

  int hosts() const { return groups_.cross->Size(); }
  int ranks_per_host() const { return groups_.local->Size(); }
  // What this rank sent across hosts (the inner hook's collectives), and
  // inside its host.
  TrafficCounters CrossHostTraffic() const { return groups_.cross->Traffic(); }
  TrafficCounters LocalTraffic() const { return groups_.local->Traffic(); }

 private:
  std::shared_ptr<ProcessGroup> pg_;
  HostGroups groups_;
  std::shared_ptr<CommHook> inner_;
  int ranks_per_host_ = 0;
};

}  // namespace lowbit::comm
