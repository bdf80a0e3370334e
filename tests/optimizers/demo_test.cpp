// DeMo on P real ranks against the math, computed in one process:
// - with every coefficient sent and beta 0 the step is theta -= lr *
//   sign(mean gradient), and nothing is left in the momentum;
// - with top-k, three steps equal a reference that runs every rank's
//   momentum with the DCT written from its formula in double precision
//   (explicit cosines, tile by tile, the padded 7-row side included), a
//   brute-force top-k per tile, the per-coefficient mean over the ranks that
//   sent it and the sign step (1e-5);
// - a rank sends PayloadBytes (85x under fp32 for a 256 x 256 matrix with
//   the defaults); save/load resumes bit for bit; a non-finite gradient on
//   one rank skips the step on all; under DDP, DeMo owns the hook; bad or
//   mismatched settings are refused, naming them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/optimizers/demo.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::optim {
namespace {

using lowbit::testing::ExpectError;
using lowbit::testing::Pg;
using Tensors = std::vector<at::Tensor>;

// 2-D tiles of 4 x 4 (the 7-row side padded to 8), and a flat run of 2.
const std::vector<std::vector<int64_t>> kShapes = {{8, 12}, {7, 8}, {10}};
constexpr int64_t kChunk = 4;

Tensors InitialParams() {
  at::Generator gen = at::detail::createCPUGenerator(3);
  Tensors out;
  for (const auto& s : kShapes) out.push_back(torch::randn(s, gen).requires_grad_());
  return out;
}

at::Tensor Gradient(int rank, size_t i, int step) {
  return torch::randn(kShapes[i], at::detail::createCPUGenerator(1000 * step + 10 * rank + static_cast<int64_t>(i)));
}

double Dct(int64_t s, int64_t k, int64_t n) {
  const double c = k == 0 ? std::sqrt(1.0 / static_cast<double>(s)) : std::sqrt(2.0 / static_cast<double>(s));
  return c * std::cos(M_PI * (2.0 * static_cast<double>(n) + 1.0) * static_cast<double>(k) /
                      (2.0 * static_cast<double>(s)));
}

// One parameter's tiles, as lists of (row, col) positions in the padded
// matrix (a flat parameter is one row), each tile s1 x s2.
struct Tiling {
  int64_t rows, cols, prows, pcols, s1, s2;
};

Tiling TilingOf(const std::vector<int64_t>& shape) {
  if (shape.size() == 2 && shape[0] == 8) return {8, 12, 8, 12, 4, 4};
  if (shape.size() == 2) return {7, 8, 8, 8, 4, 4};
  return {1, 10, 1, 10, 1, 2};
}

// The DCT of every tile of x (padded with zeros): [tiles][s1 * s2].
std::vector<std::vector<double>> Forward(const Tiling& t, const at::Tensor& x) {
  const at::Tensor m = x.to(torch::kDouble).reshape({t.rows, t.cols});
  std::vector<std::vector<double>> out;
  for (int64_t a = 0; a < t.prows; a += t.s1) {
    for (int64_t b = 0; b < t.pcols; b += t.s2) {
      std::vector<double> y(t.s1 * t.s2, 0.0);
      for (int64_t u = 0; u < t.s1; ++u) {
        for (int64_t v = 0; v < t.s2; ++v) {
          double sum = 0;
          for (int64_t p = 0; p < t.s1; ++p) {
            for (int64_t q = 0; q < t.s2; ++q) {
              const int64_t r = a + p, c = b + q;
              if (r < t.rows && c < t.cols) sum += Dct(t.s1, u, p) * Dct(t.s2, v, q) * m[r][c].item<double>();
            }
          }
          y[u * t.s2 + v] = sum;
        }
      }
      out.push_back(y);
    }
  }
  return out;
}

// The inverse, cropped to the parameter's shape.
at::Tensor Inverse(const Tiling& t, const std::vector<std::vector<double>>& y, const std::vector<int64_t>& shape) {
  at::Tensor m = torch::zeros({t.rows, t.cols}, torch::kDouble);
  size_t tile = 0;
  for (int64_t a = 0; a < t.prows; a += t.s1) {
    for (int64_t b = 0; b < t.pcols; b += t.s2, ++tile) {
      for (int64_t p = 0; p < t.s1; ++p) {
        for (int64_t q = 0; q < t.s2; ++q) {
          const int64_t r = a + p, c = b + q;
          if (r >= t.rows || c >= t.cols) continue;
          double sum = 0;
          for (int64_t u = 0; u < t.s1; ++u) {
            for (int64_t v = 0; v < t.s2; ++v) sum += Dct(t.s1, u, p) * Dct(t.s2, v, q) * y[tile][u * t.s2 + v];
          }
          m[r][c] = sum;
        }
      }
    }
  }
  return m.reshape(shape);
}

TEST(DeMo, MatchesTheFormulaWithTopK) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  constexpr double kLr = 0.01, kBeta = 0.9;
  constexpr int64_t kTopK = 3;
  Tensors params = InitialParams();
  DeMo opt(params, Pg(), DeMoOptions(kLr).beta(kBeta).chunk(kChunk).topk(kTopK));
  Tensors theta;
  for (const auto& p : InitialParams()) theta.push_back(p.detach().to(torch::kDouble));
  std::vector<Tensors> m(world);
  for (int r = 0; r < world; ++r) {
    for (const auto& s : kShapes) m[r].push_back(torch::zeros(s, torch::kDouble));
  }
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = Gradient(rank, i, step);
    opt.step();
    for (size_t i = 0; i < kShapes.size(); ++i) {
      const Tiling t = TilingOf(kShapes[i]);
      std::vector<std::vector<double>> sum, count;
      for (int r = 0; r < world; ++r) {
        m[r][i] = kBeta * m[r][i] + kLr * Gradient(r, i, step).to(torch::kDouble);
        std::vector<std::vector<double>> y = Forward(t, m[r][i]);
        if (sum.empty()) {
          sum.assign(y.size(), std::vector<double>(y[0].size(), 0.0));
          count = sum;
        }
        std::vector<std::vector<double>> sent(y.size(), std::vector<double>(y[0].size(), 0.0));
        for (size_t tile = 0; tile < y.size(); ++tile) {
          std::vector<int64_t> order(y[tile].size());
          for (size_t j = 0; j < order.size(); ++j) order[j] = static_cast<int64_t>(j);
          std::sort(order.begin(), order.end(),
                    [&](int64_t a, int64_t b) { return std::abs(y[tile][a]) > std::abs(y[tile][b]); });
          for (int64_t j = 0; j < std::min<int64_t>(kTopK, order.size()); ++j) {
            sent[tile][order[j]] = y[tile][order[j]];
            sum[tile][order[j]] += y[tile][order[j]];
            count[tile][order[j]] += 1;
          }
        }
        m[r][i] -= Inverse(t, sent, kShapes[i]);
      }
      for (size_t tile = 0; tile < sum.size(); ++tile) {
        for (size_t j = 0; j < sum[tile].size(); ++j) sum[tile][j] /= std::max(1.0, count[tile][j]);
      }
      theta[i] -= kLr * Inverse(t, sum, kShapes[i]).sign();
      EXPECT_TRUE(torch::allclose(params[i].detach().to(torch::kDouble), theta[i], 0.0, 1e-5))
          << "step " << step << " tensor " << i << " differs by "
          << (params[i].detach().to(torch::kDouble) - theta[i]).abs().max().item<double>();
    }
  }
}

TEST(DeMo, SendingEveryCoefficientStepsOnTheSignOfTheMeanGradient) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  constexpr double kLr = 0.01;
  Tensors params = InitialParams();
  DeMo opt(params, Pg(), DeMoOptions(kLr).beta(0.0).chunk(kChunk).topk(16));
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = Gradient(rank, i, 1);
  opt.step();
  const Tensors start = InitialParams();
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor mean = torch::zeros(kShapes[i]);
    for (int r = 0; r < world; ++r) mean += Gradient(r, i, 1) / world;
    const at::Tensor clear = mean.abs() > 1e-4;  // away from sign's jump
    const at::Tensor want = start[i].detach() - kLr * mean.sign();
    EXPECT_TRUE(torch::allclose(params[i].detach().masked_select(clear), want.masked_select(clear), 0.0, 1e-6)) << i;
  }
  if (world > 1) EXPECT_EQ(opt.LastStepStats().bytes_sent, opt.PayloadBytes());
}

TEST(DeMo, SendsEightyFiveTimesLessThanFp32) {
  Tensors big = {torch::zeros({256, 256}, torch::requires_grad())};
  DeMo opt(big, Pg());
  EXPECT_EQ(opt.KeptPerStep(), 16 * 32);
  EXPECT_EQ(opt.PayloadBytes(), 4 + 16 * 32 * 6);
  EXPECT_GE(256.0 * 256.0 * 4.0 / static_cast<double>(opt.PayloadBytes()), 85.0);
}

TEST(DeMo, ResumesBitForBit) {
  const int rank = Pg()->Rank();
  const auto options = DeMoOptions(0.01).chunk(kChunk).topk(3);
  auto run = [&](DeMo& opt, Tensors& params, int from, int to) {
    for (int step = from; step <= to; ++step) {
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = Gradient(rank, i, step);
      opt.step();
    }
  };
  Tensors straight = InitialParams();
  DeMo a(straight, Pg(), options);
  run(a, straight, 1, 4);
  Tensors first = InitialParams();
  std::stringstream saved;
  {
    DeMo b(first, Pg(), options);
    run(b, first, 1, 2);
    torch::serialize::OutputArchive archive;
    b.save(archive);
    archive.save_to(saved);
  }
  Tensors resumed = InitialParams();
  DeMo c(resumed, Pg(), options);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < resumed.size(); ++i) resumed[i].copy_(first[i]);
  }
  torch::serialize::InputArchive in;
  in.load_from(saved);
  c.load(in);
  run(c, resumed, 3, 4);
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(torch::equal(straight[i], resumed[i])) << i;
}

TEST(DeMo, ANonFiniteGradientSkipsTheStepEverywhere) {
  const int world = Pg()->Size(), rank = Pg()->Rank();
  Tensors params = InitialParams();
  DeMo opt(params, Pg(), DeMoOptions(0.01).chunk(kChunk).topk(3));
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = Gradient(rank, i, 1);
  if (rank == world - 1) params[0].mutable_grad()[1][1] = std::nanf("");
  opt.step();
  EXPECT_TRUE(opt.LastStepStats().skipped);
  const Tensors start = InitialParams();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i], start[i])) << i;
}

TEST(DeMo, OwnsDdpsHookAndRefusesBadSettings) {
  torch::manual_seed(2);
  torch::nn::Linear model(8, 4);
  comm::DistributedDataParallel ddp(model.ptr(), Pg());
  DeMo opt({torch::optim::OptimizerParamGroup(model->parameters())}, ddp, DeMoOptions(0.01));
  EXPECT_EQ(ddp.comm_hook_owner(), "DeMo");
  ExpectError([&] { ddp.RegisterCommHook(compress::MakeCommHook(Pg(), "fp16")); },
              "the comm hook belongs to DeMo, which does its own exchange");
  Tensors params = InitialParams();
  ExpectError([&] { DeMo(params, Pg(), DeMoOptions(0.0)); }, "lr must be > 0, got 0");
  ExpectError([&] { DeMo(params, Pg(), DeMoOptions().chunk(200)); }, "chunk must be in [1, 128]");
  ExpectError([&] { DeMo(params, Pg(), DeMoOptions().topk(0)); }, "topk must be >= 1, got 0");
  ExpectError([&] { DeMo(params, Pg(), DeMoOptions().beta(1.5)); }, "beta must be in [0, 1], got 1.5");
  if (Pg()->Size() > 1) {
    ExpectError([&] { DeMo(params, Pg(), DeMoOptions().topk(Pg()->Rank() == 1 ? 7 : 5)); }, "topk=7");
  }
}

}  // namespace
}  // namespace lowbit::optim
