// The two-level exchange on real ranks (2 ranks: 2 hosts x 1 and 1 host x 2;
// 4 ranks: 2 hosts x 2, hosts taken as blocks of ranks):
// - with an uncompressed inner hook it equals the flat mean allreduce within
//   float reassociation (a mean over the host, then over hosts: 1e-6 on
//   values of order 1), the same bits on every rank, for a bucket that does
//   not divide into the shards;
// - only one shard per rank crosses hosts (the cross group's bytes);
// - a compressed inner hook (qsgd 8-bit) compresses across hosts only and
//   keeps error feedback per shard;
// - a non-finite input on one rank is flagged on every rank; bad layouts and
//   backends without host groups are refused, naming them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lowbit/comm/local_process_group.h"
#include "lowbit/comm/two_level_hook.h"
#include "lowbit/compress/registry.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::comm {
namespace {

using lowbit::testing::ExpectError;
using lowbit::testing::Pg;

GradBucket MakeBucket(int rank, int seed) {
  GradBucket b;
  b.buffer = torch::randn({1037}, at::detail::createCPUGenerator(100 * seed + rank));
  b.gradients = {b.buffer.narrow(0, 0, 1000).view({40, 25}), b.buffer.narrow(0, 1000, 37)};
  b.parameter_names = {"w", "b"};
  b.offsets = {0, 1000};
  b.is_last = true;
  return b;
}

std::vector<int> Layouts() {
  const int world = Pg()->Size();
  if (world == 4) return {2, 1, 4};
  if (world == 2) return {1, 2};
  return {1};
}

TEST(TwoLevelHook, UncompressedEqualsTheFlatMean) {
  const int rank = Pg()->Rank(), world = Pg()->Size();
  if (Pg()->Backend() != "mpi") GTEST_SKIP() << "host groups need the MPI backend";
  for (int per_host : Layouts()) {
    TwoLevelHook hook(
        Pg(), [](std::shared_ptr<ProcessGroup> cross) { return std::make_shared<AllReduceHook>(cross); }, per_host);
    EXPECT_EQ(hook.ranks_per_host(), per_host);
    EXPECT_EQ(hook.hosts(), world / per_host);
    GradBucket b = MakeBucket(rank, 1);
    at::Tensor flat = b.buffer.clone();
    Pg()->AllReduce(flat, ReduceOp::kAvg)->Wait();
    const TrafficCounters cross_before = hook.CrossHostTraffic();
    auto work = hook.RunHook(b);
    work->Wait();
    const auto result = work->Result();
    EXPECT_EQ(result[1].item<double>(), 0.0);
    EXPECT_TRUE(torch::allclose(b.buffer, flat, 0.0, 1e-6))
        << per_host << " per host: differs by " << (b.buffer - flat).abs().max().item<double>();
    at::Tensor spread = torch::stack({b.buffer, -b.buffer});
    Pg()->AllReduce(spread, ReduceOp::kMax)->Wait();
    EXPECT_TRUE(torch::equal(spread[0], -spread[1])) << per_host << " per host: the ranks' results differ";
    // One shard of ceil(1037 / L) floats crosses hosts per rank.
    const int64_t shard = per_host == 1 ? 1037 : (1037 + per_host - 1) / per_host;
    if (world / per_host > 1) EXPECT_EQ(hook.CrossHostTraffic().bytes_sent - cross_before.bytes_sent, 4 * shard);
  }
}

TEST(TwoLevelHook, CompressesAcrossHostsWithErrorFeedbackPerShard) {
  const int rank = Pg()->Rank(), world = Pg()->Size();
  if (Pg()->Backend() != "mpi" || world < 4) GTEST_SKIP() << "2 hosts x 2 ranks under MPI";
  TwoLevelHook hook(
      Pg(),
      [](std::shared_ptr<ProcessGroup> cross) {
        return compress::MakeCommHook(cross, "qsgd", {{"bits", "8"}, {"min_compress_numel", "0"}});
      },
      2);
  GradBucket b = MakeBucket(rank, 2);
  at::Tensor flat = b.buffer.clone();
  Pg()->AllReduce(flat, ReduceOp::kAvg)->Wait();
  auto work = hook.RunHook(b);
  work->Wait();
  // 8-bit codes: far closer than the values' spread, not equal.
  const double err = (b.buffer - flat).abs().max().item<double>();
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 0.0);
  bool has_shard_state = false;
  for (const auto& [name, t] : hook.StateDict()) has_shard_state |= name.find("bucket0/shard") != std::string::npos;
  EXPECT_TRUE(has_shard_state);
  EXPECT_NE(hook.Config().find("qsgd"), std::string::npos);
}

TEST(TwoLevelHook, ANonFiniteInputIsFlaggedEverywhere) {
  const int rank = Pg()->Rank(), world = Pg()->Size();
  if (Pg()->Backend() != "mpi") GTEST_SKIP() << "host groups need the MPI backend";
  TwoLevelHook hook(
      Pg(), [](std::shared_ptr<ProcessGroup> cross) { return std::make_shared<AllReduceHook>(cross); },
      world >= 2 ? 2 : 1);
  GradBucket b = MakeBucket(rank, 3);
  if (rank == world - 1) b.buffer[5] = std::nanf("");
  auto work = hook.RunHook(b);
  work->Wait();
  EXPECT_EQ(work->Result()[1].item<double>(), 1.0);
}

TEST(TwoLevelHook, BadLayoutsAreRefused) {
  if (Pg()->Backend() == "mpi" && Pg()->Size() == 4) {
    ExpectError([] { SplitByHost(Pg(), 3); }, "ranks_per_host (3) must divide the world size (4)");
  }
  ExpectError([] { SplitByHost(Pg(), -1); }, "ranks_per_host must be >= 0 (0: detect), got -1");
  ExpectError([] { SplitByHost(std::make_shared<LocalProcessGroup>(), 1); },
              "two-level exchange needs the MPI backend");
}

}  // namespace
}  // namespace lowbit::comm
