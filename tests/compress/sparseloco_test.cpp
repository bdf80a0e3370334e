// SparseLoCo's exchange on P real ranks, against the math:
// - chunked top-k keeps, in each chunk, entries no smaller in magnitude than
//   any it drops (a brute-force sort per chunk), k per full chunk and
//   ceil(k * length / chunk) in the last;
// - what a rank sent, c = decay * e_before + g - e_after, is zero outside
//   the top-k of decay * e_before + g in each chunk; it takes at most 2^bits
//   values per tensor, each the mean of the entries mapped to it; the result
//   is the mean over ranks of c (an allreduce of c, 1e-6); the bytes sent are
//   PayloadBytes;
// - the state round-trips exactly; a non-finite input on one rank is flagged
//   on every rank and leaves that rank's buffer alone; bad settings name
//   themselves.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>

#include "lowbit/compress/chunked_topk.h"
#include "lowbit/compress/registry.h"
#include "lowbit/compress/sparseloco_hook.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::compress {
namespace {

using lowbit::testing::ExpectError;
using lowbit::testing::Pg;

// The positions of the k largest |x| in [begin, end), by a full sort.
std::set<int64_t> BruteTopK(const at::Tensor& x, int64_t begin, int64_t end, int64_t k) {
  std::vector<std::pair<float, int64_t>> v;
  for (int64_t i = begin; i < end; ++i) v.emplace_back(std::abs(x[i].item<float>()), i);
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::set<int64_t> out;
  for (int64_t j = 0; j < k; ++j) out.insert(v[j].second);
  return out;
}

TEST(ChunkedTopK, KeepsTheLargestOfEachChunk) {
  const at::Tensor x = torch::randn({237}, at::detail::createCPUGenerator(5));
  const ChunkedSelection sel = ChunkedTopK(x, 100, 7);
  ASSERT_EQ(ChunkedTopKCount(237, 100, 7), 7 + 7 + 3);
  ASSERT_EQ(sel.index.numel(), 17);
  EXPECT_TRUE(torch::equal(sel.values, x.index_select(0, sel.index)));
  const at::Tensor base = ChunkBase(237, 100, 7, x.options());
  for (int64_t j = 0; j < 17; ++j) {
    const int64_t i = sel.index[j].item<int64_t>(), b = base[j].item<int64_t>();
    EXPECT_TRUE(i >= b && i < b + 100) << "entry " << j << " at " << i << ", chunk from " << b;
  }
  std::set<int64_t> got;
  for (int64_t j = 0; j < 17; ++j) got.insert(sel.index[j].item<int64_t>());
  std::set<int64_t> want = BruteTopK(x, 0, 100, 7);
  for (int64_t i : BruteTopK(x, 100, 200, 7)) want.insert(i);
  for (int64_t i : BruteTopK(x, 200, 237, 3)) want.insert(i);
  EXPECT_EQ(got, want);
  ExpectError([] { CheckChunkedTopK("t", 40000, 1); }, "chunk must be in [1, 32768], got 40000");
  ExpectError([] { CheckChunkedTopK("t", 100, 101); }, "topk must be in [1, chunk = 100], got 101");
}

struct Round {
  std::vector<at::Tensor> sent;  // c per tensor
  at::Tensor result;
  bool bad = false;
  int64_t bytes = 0;
};

constexpr int64_t kChunk = 1024, kK = 16;
constexpr double kDecay = 0.9;
const std::vector<std::vector<int64_t>> kShapes = {{70, 90}, {33}};

comm::GradBucket MakeBucket() {
  comm::GradBucket b;
  int64_t total = 0;
  for (const auto& s : kShapes) total += c10::multiply_integers(s);
  b.buffer = torch::zeros({total});
  int64_t offset = 0;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    const int64_t n = c10::multiply_integers(kShapes[i]);
    b.gradients.push_back(b.buffer.narrow(0, offset, n).view(kShapes[i]));
    b.parameter_names.push_back("p" + std::to_string(i));
    b.offsets.push_back(offset);
    offset += n;
  }
  b.is_last = true;
  return b;
}

std::map<std::string, at::Tensor> Errors(const SparseLoCoHook& hook) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : hook.StateDict()) out[name.substr(6)] = t;
  return out;
}

Round RunRound(SparseLoCoHook& hook, int round, bool poison = false) {
  const int rank = Pg()->Rank();
  comm::GradBucket b = MakeBucket();
  for (size_t i = 0; i < b.gradients.size(); ++i) {
    b.gradients[i].copy_(torch::randn(kShapes[i], at::detail::createCPUGenerator(1000 * round + 10 * rank + i)));
  }
  if (poison) b.gradients[1][2] = std::nanf("");
  std::vector<at::Tensor> g;
  for (const auto& t : b.gradients) g.push_back(t.clone());
  std::map<std::string, at::Tensor> before = Errors(hook);
  const int64_t sent_before = Pg()->Traffic().bytes_sent;
  auto work = hook.RunHook(b);
  work->Wait();
  Round r;
  r.bytes = Pg()->Traffic().bytes_sent - sent_before;
  const auto result = work->Result();
  r.result = result[0].clone();
  r.bad = result[1].item<double>() != 0.0;
  std::map<std::string, at::Tensor> after = Errors(hook);
  for (size_t i = 0; i < g.size(); ++i) {
    const std::string name = "p" + std::to_string(i);
    const at::Tensor e0 = before.count(name) ? before[name] : torch::zeros(kShapes[i]);
    r.sent.push_back(kDecay * e0 + g[i] - after[name]);
  }
  return r;
}

TEST(SparseLoCoHook, SendsTheQuantizedTopKOfTheBufferAndAveragesIt) {
  const int world = Pg()->Size();
  auto hook =
      std::make_shared<SparseLoCoHook>(Pg(), SparseLoCoHookOptions().chunk(kChunk).topk(kK).bits(2).decay(kDecay));
  std::map<std::string, at::Tensor> e = {};
  for (int round = 1; round <= 3; ++round) {
    std::map<std::string, at::Tensor> before = Errors(*hook);
    // The buffer this round selects from, recomputed from the same inputs.
    const Round r = RunRound(*hook, round);
    ASSERT_FALSE(r.bad);
    for (size_t i = 0; i < kShapes.size(); ++i) {
      const std::string name = "p" + std::to_string(i);
      const int64_t n = r.sent[i].numel();
      const at::Tensor pre =
          (kDecay * (before.count(name) ? before[name] : torch::zeros(kShapes[i])) +
           torch::randn(kShapes[i], at::detail::createCPUGenerator(1000 * round + 10 * Pg()->Rank() + i)))
              .reshape({-1});
      const at::Tensor c = r.sent[i].reshape({-1});
      std::set<int64_t> allowed;
      for (int64_t begin = 0; begin < n; begin += kChunk) {
        const int64_t end = std::min(n, begin + kChunk);
        const int64_t k =
            end - begin == kChunk ? kK : std::min(end - begin, (kK * (end - begin) + kChunk - 1) / kChunk);
        for (int64_t j : BruteTopK(pre, begin, end, k)) allowed.insert(j);
      }
      std::map<float, std::vector<int64_t>> by_value;
      for (int64_t j = 0; j < n; ++j) {
        const float v = c[j].item<float>();
        if (std::abs(v) < 1e-6f) continue;
        EXPECT_TRUE(allowed.count(j)) << "round " << round << " tensor " << i << ": sent entry " << j
                                      << " is not in its chunk's top-k";
        // c is a difference of floats: group values within 1e-5.
        bool placed = false;
        for (auto& [value, where] : by_value) {
          if (std::abs(value - v) <= 1e-5f * std::max(1.0f, std::abs(v))) {
            where.push_back(j);
            placed = true;
            break;
          }
        }
        if (!placed) by_value[v].push_back(j);
      }
      EXPECT_LE(by_value.size(), 4u) << "round " << round << " tensor " << i;
      for (const auto& [value, where] : by_value) {
        double mean = 0;
        for (int64_t j : where) mean += pre[j].item<double>();
        mean /= static_cast<double>(where.size());
        // Every top-k entry lands in some bin, so each bin's value is the
        // mean of its entries.
        EXPECT_NEAR(value, mean, 1e-4 * std::max(1.0, std::abs(mean))) << "round " << round << " tensor " << i;
      }
    }
    at::Tensor sum = at::cat({r.sent[0].reshape({-1}), r.sent[1].reshape({-1})});
    Pg()->AllReduce(sum, comm::ReduceOp::kSum)->Wait();
    EXPECT_TRUE(torch::allclose(r.result, sum / world, 0.0, 1e-6))
        << "round " << round << " differs by " << (r.result - sum / world).abs().max().item<double>();
    if (world > 1) EXPECT_EQ(r.bytes, hook->PayloadBytes({6300, 33}));
  }
  // 6300 elements: 6 full chunks of 16 and 156 -> 3; 33 -> 1. 100 kept at
  // 2 + 16 bits, 2 tables of 4 floats, a flag: 4 + 32 + 200 + 25 -> 264.
  EXPECT_EQ(hook->PayloadBytes({6300, 33}), 264);
}

TEST(SparseLoCoHook, StateRoundTripsExactly) {
  const auto options = SparseLoCoHookOptions().chunk(kChunk).topk(kK).decay(kDecay);
  SparseLoCoHook a(Pg(), options);
  RunRound(a, 1);
  RunRound(a, 2);
  SparseLoCoHook b(Pg(), options);
  b.LoadStateDict(a.StateDict());
  const Round ra = RunRound(a, 3), rb = RunRound(b, 3);
  EXPECT_TRUE(torch::equal(ra.result, rb.result));
}

TEST(SparseLoCoHook, ANonFiniteInputIsFlaggedOnEveryRank) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  SparseLoCoHook hook(Pg(), SparseLoCoHookOptions().chunk(kChunk).topk(kK).decay(kDecay));
  RunRound(hook, 1);
  const auto before = Errors(hook);
  const Round r = RunRound(hook, 2, /*poison=*/rank == world - 1);
  EXPECT_TRUE(r.bad);
  if (rank == world - 1) {
    for (const auto& [name, e] : Errors(hook)) EXPECT_TRUE(torch::equal(e, before.at(name))) << name;
  }
}

TEST(SparseLoCoHook, BadSettingsNameThemselves) {
  ExpectError([] { MakeCommHook(Pg(), "sparseloco", {{"bits", "3"}}); }, "bits");
  ExpectError(
      [] {
        MakeCommHook(Pg(), "sparseloco", {{"chunk", "64"}, {"topk", "65"}});
      },
      "topk must be <= chunk (64), got 65");
  ExpectError([] { SparseLoCoHook(Pg(), SparseLoCoHookOptions().decay(1.5)); }, "decay must be in [0, 1], got 1.5");
}

}  // namespace
}  // namespace lowbit::compress
