// N:M masks against a brute-force sort of each group; compression round
// trips; magnitude and block masks against their definitions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "lowbit/kernels/sparse.h"
#include "tests/common/expect_error.h"

namespace lowbit::kernels {
namespace {

using lowbit::testing::ExpectError;

// The reference: sort each group's positions by |w| descending, stable (ties
// keep the lower position first), keep the first n.
at::Tensor ReferenceNm(const at::Tensor& w, int64_t n, int64_t m) {
  at::Tensor flat = w.reshape({-1, m});
  at::Tensor mask = torch::zeros(flat.sizes(), torch::kBool);
  auto a = flat.accessor<float, 2>();
  auto k = mask.accessor<bool, 2>();
  for (int64_t g = 0; g < flat.size(0); ++g) {
    std::vector<int64_t> pos(m);
    std::iota(pos.begin(), pos.end(), 0);
    // NaN ranks as +inf (a diverged weight is kept, not silently dropped).
    auto key = [&](int64_t x) { return std::isnan(a[g][x]) ? INFINITY : std::abs(a[g][x]); };
    std::stable_sort(pos.begin(), pos.end(), [&](int64_t x, int64_t y) { return key(x) > key(y); });
    for (int64_t t = 0; t < n; ++t) k[g][pos[t]] = true;
  }
  return mask.view(w.sizes());
}

TEST(SparseKernelTest, NmMaskKeepsTheLargestNOfEveryGroup) {
  torch::manual_seed(1);
  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 4}, {4, 8}, {1, 4}, {3, 4}, {5, 16}, {4, 4}}) {
    at::Tensor w = torch::randn({24, 64});
    // Ties and zeros: repeated magnitudes with both signs.
    w.index_put_({torch::indexing::Slice(0, 4)}, torch::tensor({1.0f, -1.0f, 0.0f, 1.0f}).repeat({16}));
    at::Tensor mask = NmMask(w, n, m);
    ASSERT_EQ(mask.scalar_type(), torch::kBool);
    EXPECT_TRUE(torch::equal(mask.reshape({-1, m}).sum(1), torch::full({24 * 64 / m}, n, torch::kLong)))
        << n << ":" << m;
    EXPECT_TRUE(torch::equal(mask, ReferenceNm(w, n, m))) << n << ":" << m;
    // Every kept magnitude is at least every dropped one in its group.
    at::Tensor a = w.abs().reshape({-1, m}), k = mask.reshape({-1, m});
    at::Tensor kept_min = torch::where(k, a, torch::full_like(a, 1e30)).amin(1);
    at::Tensor dropped_max = torch::where(k, torch::full_like(a, -1.0), a).amax(1);
    EXPECT_TRUE((kept_min >= dropped_max).all().item<bool>());
  }
}

// NaN and infinities, and group counts that leave a remainder after the
// four-groups-at-once 4:8 loop (1, 3, 5, 15 and 4097 groups).
TEST(SparseKernelTest, NmMaskRanksNaNAsInfinityAtEveryGroupCount) {
  torch::manual_seed(2);
  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 4}, {4, 8}, {1, 8}, {7, 8}}) {
    for (int64_t groups : {1, 3, 5, 15, 4097}) {
      at::Tensor w = torch::randn({groups, m});
      at::Tensor flat = w.view({-1});
      flat[0] = NAN;
      if (groups > 1) {
        flat[m + 1] = INFINITY;
        flat[m + 2] = -INFINITY;
        flat[m + 3] = NAN;  // ties with the infinities: lower positions first
      }
      if (groups >= 4) flat[4 * m - 1] = NAN;  // last position, in a group of four
      flat[flat.numel() - 1] = -NAN;
      EXPECT_TRUE(torch::equal(NmMask(w, n, m), ReferenceNm(w, n, m))) << n << ":" << m << ", " << groups << " groups";
    }
  }
}

TEST(SparseKernelTest, CompressionRoundTripsAndIsHalfTheValuesAt2Of4) {
  torch::manual_seed(2);
  at::Tensor w = torch::randn({16, 32});
  at::Tensor mask = NmMask(w, 2, 4);
  at::Tensor sparse = w * mask;
  NmCompressed c = CompressNm(sparse, mask, 2, 4);
  EXPECT_EQ(c.values.sizes(), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(c.index.scalar_type(), torch::kByte);
  EXPECT_TRUE(torch::equal(DecompressNm(c.values, c.index, 2, 4), sparse));
  // The values are the kept ones in order, the indices their positions.
  EXPECT_TRUE(torch::equal(c.values.view(-1), sparse.masked_select(mask)));
  at::Tensor pos = torch::arange(4, torch::kLong).repeat({16 * 8}).view({16, 32});
  EXPECT_TRUE(torch::equal(c.index.to(torch::kLong).view(-1), pos.masked_select(mask)));
  // A kept weight that happens to be zero is still kept.
  sparse.index_put_({0, 0}, 0.0f);
  mask.index_put_({0, 0}, true);
  mask.index_put_({0, 1}, false);
  mask.index_put_({0, 2}, false);
  mask.index_put_({0, 3}, true);
  EXPECT_TRUE(torch::equal(DecompressNm(CompressNm(sparse * mask, mask, 2, 4).values,
                                        CompressNm(sparse * mask, mask, 2, 4).index, 2, 4),
                           sparse * mask));
}

TEST(SparseKernelTest, MagnitudeMaskPrunesExactlyTheSmallest) {
  torch::manual_seed(3);
  at::Tensor w = torch::randn({7, 13, 3});
  w.view(-1).slice(0, 0, 10).fill_(0.5f);  // ties
  for (double s : {0.0, 0.1, 0.5, 0.9, 0.99}) {
    at::Tensor mask = MagnitudeMask(w, s);
    const int64_t zeros = mask.numel() - mask.sum().item<int64_t>();
    EXPECT_EQ(zeros, std::llround(s * w.numel())) << s;
    if (zeros > 0 && zeros < w.numel()) {
      EXPECT_GE(w.abs().masked_select(mask).min().item<float>(),
                w.abs().masked_select(mask.logical_not()).max().item<float>());
    }
  }
}

TEST(SparseKernelTest, MagnitudeMaskBreaksTiesByPositionAndKeepsNaN) {
  at::Tensor w = torch::tensor({2.0f, -1.0f, 1.0f, NAN, 1.0f, -1.0f, 3.0f, 0.5f});
  // Sorted: 0.5 (7), then the four 1.0s at 1, 2, 4, 5, then 2 (0), 3 (6), NaN (3).
  EXPECT_TRUE(torch::equal(MagnitudeMask(w, 0.375),  // 3 pruned: 7, 1, 2
                           torch::tensor({true, false, false, true, true, true, true, false})));
  EXPECT_TRUE(torch::equal(MagnitudeMask(w, 0.875),  // 7 pruned: all but NaN
                           torch::tensor({false, false, false, true, false, false, false, false})));
}

TEST(SparseKernelTest, BlockMaskDropsWholeLowestBlocks) {
  torch::manual_seed(4);
  at::Tensor w = torch::randn({8, 12});
  at::Tensor mask = BlockMagnitudeMask(w, 0.5, 2, 3);
  at::Tensor blocks = mask.view({4, 2, 4, 3}).to(torch::kLong).sum(at::IntArrayRef{1, 3});
  EXPECT_TRUE(((blocks == 0) | (blocks == 6)).all().item<bool>()) << blocks;
  EXPECT_EQ((blocks == 0).sum().item<int64_t>(), 8);
  at::Tensor scores = w.abs().view({4, 2, 4, 3}).sum(at::IntArrayRef{1, 3});
  EXPECT_GE(scores.masked_select(blocks == 6).min().item<float>(), scores.masked_select(blocks == 0).max().item<float>());
}

TEST(SparseKernelTest, BadInputsNameTheProblem) {
  at::Tensor w = torch::randn({4, 6});
  ExpectError([&] { NmMask(w, 2, 4); }, "w's columns (6) must be a multiple of 4");
  ExpectError([&] { NmMask(torch::randn({4, 8}), 5, 4); }, "n must be in [1, m = 4], got 5");
  ExpectError([&] { NmMask(torch::randn({8}), 2, 4); }, "w must be 2-D [rows, cols], got 1-D");
  at::Tensor x = torch::randn({2, 8});
  ExpectError([&] { CompressNm(x, torch::ones({2, 8}, torch::kBool), 2, 4); },
              "4 of 4 groups of the mask do not keep exactly n = 2");
  at::Tensor bad_index = torch::tensor({{3, 1}}, torch::kByte);
  ExpectError([&] { DecompressNm(torch::ones({1, 2}), bad_index, 2, 4); }, "1 of 1 groups have an index >= m = 4");
  ExpectError([&] { MagnitudeMask(w, 1.0); }, "sparsity must be in [0, 1), got 1");
  ExpectError([&] { MagnitudeMask(w, -0.1); }, "sparsity must be in [0, 1), got -0.1");
  ExpectError([&] { BlockMagnitudeMask(w, 0.5, 3, 4); }, "block 3 x 4 must tile w's shape [4, 6]");
}

}  // namespace
}  // namespace lowbit::kernels
