// ShardIndices against the arithmetic of DistributedSampler and against
// PyTorch's own torch.utils.data.DistributedSampler (Debian's python3-torch).
#include "lowbit/train/shard.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/expect_error.h"

namespace lowbit::train {
namespace {

std::vector<int64_t> ToVector(const at::Tensor& t) {
  EXPECT_EQ(t.scalar_type(), at::kLong);
  EXPECT_EQ(t.dim(), 1);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST(ShardTest, RanksCoverTheDatasetWithEqualShares) {
  for (int64_t size : {1, 5, 10, 64, 65, 1000}) {
    for (int world : {1, 2, 3, 4, 8}) {
      for (bool drop_last : {false, true}) {
        for (bool shuffle : {false, true}) {
          if (drop_last && size < world) continue;
          ShardOptions o;
          o.drop_last = drop_last;
          o.shuffle = shuffle;
          o.seed = 7;
          const int64_t per_rank = drop_last ? size / world : (size + world - 1) / world;
          std::vector<std::vector<int64_t>> shards;
          for (int r = 0; r < world; ++r) shards.push_back(ToVector(ShardIndices(size, r, world, 3, o)));
          // Interleaved back: the padded (or cut) order of all ranks.
          std::vector<int64_t> order;
          for (int64_t i = 0; i < per_rank; ++i) {
            for (int r = 0; r < world; ++r) {
              ASSERT_EQ(static_cast<int64_t>(shards[r].size()), per_rank) << size << " " << world << " rank " << r;
              order.push_back(shards[r][i]);
            }
          }
          const int64_t distinct = std::min<int64_t>(size, per_rank * world);
          std::set<int64_t> first(order.begin(), order.begin() + distinct);
          EXPECT_EQ(static_cast<int64_t>(first.size()), distinct) << "the order repeats before it pads";
          for (int64_t v : order) EXPECT_TRUE(v >= 0 && v < size);
          // Padding repeats the start of the order.
          for (size_t i = size; i < order.size(); ++i) EXPECT_EQ(order[i], order[i % size]);
          if (!shuffle) {
            for (int64_t i = 0; i < distinct; ++i) EXPECT_EQ(order[i], i);
          }
        }
      }
    }
  }
}

TEST(ShardTest, EachEpochShufflesAlikeOnEveryRank) {
  const at::Tensor a = ShardIndices(100, 1, 4, 0), again = ShardIndices(100, 1, 4, 0),
                   next = ShardIndices(100, 1, 4, 1);
  EXPECT_TRUE(at::equal(a, again));
  EXPECT_FALSE(at::equal(a, next));
  ShardOptions other;
  other.seed = 1;
  EXPECT_FALSE(at::equal(a, ShardIndices(100, 1, 4, 0, other)));
  // seed + epoch, as DistributedSampler: seed 1 epoch 0 is seed 0 epoch 1.
  EXPECT_TRUE(at::equal(next, ShardIndices(100, 1, 4, 0, other)));
}

TEST(ShardTest, BadInputIsNamed) {
  using lowbit::testing::ExpectError;
  ExpectError([] { ShardIndices(-1, 0, 2, 0); }, "size must be >= 0, got -1");
  ExpectError([] { ShardIndices(10, 2, 2, 0); }, "rank must be in [0, 2), got 2");
  ExpectError([] { ShardIndices(10, 0, 0, 0); }, "world size must be >= 1, got 0");
  ExpectError([] { ShardIndices(10, 0, 2, -3); }, "epoch must be >= 0, got -3");
  ExpectError([] { ShardIndices(0, 0, 2, 0); }, "0 examples leave none for some of the 2 ranks");
  ExpectError([] { ShardIndices(3, 0, 4, 0, ShardOptions{true, 0, true}); }, "3 examples leave none");
}

// The indices of torch.utils.data.DistributedSampler, one line per case.
TEST(ShardTest, MatchesPyTorchDistributedSampler) {
  struct Case {
    int64_t size;
    int world, rank;
    int64_t epoch;
    uint64_t seed;
    bool shuffle, drop_last;
  };
  const std::vector<Case> cases = {{10, 3, 0, 0, 0, true, false}, {10, 3, 2, 5, 0, true, false},
                                   {10, 3, 1, 2, 42, true, true}, {7, 4, 3, 0, 0, false, false},
                                   {3, 8, 5, 1, 9, true, false},  {1000, 4, 1, 7, 1234, true, false}};
  std::ostringstream script;
  script << "import torch\nfrom torch.utils.data import DistributedSampler\n"
         << "for n, w, r, e, s, sh, d in [";
  for (const Case& c : cases) {
    script << "(" << c.size << "," << c.world << "," << c.rank << "," << c.epoch << "," << c.seed << ","
           << (c.shuffle ? "True" : "False") << "," << (c.drop_last ? "True" : "False") << "),";
  }
  script << "]:\n  smp = DistributedSampler(range(n), num_replicas=w, rank=r, shuffle=sh, seed=s, drop_last=d)\n"
         << "  smp.set_epoch(e)\n  print(' '.join(str(i) for i in smp))\n";
  const std::string path = ::testing::TempDir() + "/shard_reference.py";
  {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "w"), std::fclose);
    ASSERT_NE(f, nullptr);
    std::fputs(script.str().c_str(), f.get());
  }
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(("/usr/bin/python3 " + path + " 2>&1").c_str(), "r"), pclose);
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof(buf), pipe.get()) != nullptr) out += buf;
  std::istringstream lines(out);
  for (const Case& c : cases) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << "PyTorch printed too little:\n" << out;
    std::istringstream values(line);
    std::vector<int64_t> want;
    for (int64_t v; values >> v;) want.push_back(v);
    ShardOptions o;
    o.seed = c.seed;
    o.shuffle = c.shuffle;
    o.drop_last = c.drop_last;
    EXPECT_EQ(ToVector(ShardIndices(c.size, c.rank, c.world, c.epoch, o)), want)
        << "size " << c.size << " world " << c.world << " rank " << c.rank << " epoch " << c.epoch;
  }
}

}  // namespace
}  // namespace lowbit::train
