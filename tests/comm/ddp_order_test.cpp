// DistributedDataParallel with what users build around it, in the right and
// the wrong order: QAT prepared after DDP (its step sizes would never be
// averaged) fails on every rank naming the tensors; QAT without Calibrate
// and a Sparsifier built after DDP train identically on every rank even when
// the ranks started from different weights; a Sparsifier built before DDP on
// such ranks fails on the ranks whose weights DDP overwrote.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparsifier.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::comm {
namespace {

using testing::Pg;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", qat::Linear(16, 32));
    mid = register_module("mid", qat::Linear(32, 32));
    fc2 = register_module("fc2", qat::Linear(32, 4));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(mid(torch::relu(fc1(x))))); }
  qat::Linear fc1{nullptr}, mid{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Net);

class DdpOrderTest : public ::testing::Test {
 protected:
  std::shared_ptr<ProcessGroup> pg = Pg();
  const int rank = pg->Rank();
  const int size = pg->Size();

  // Each rank its own batch of step `step`.
  void Backward(Net& net, int step) {
    auto gen = at::detail::createCPUGenerator(100 * step + rank);
    at::Tensor x = torch::randn({8, 16}, gen) * (1 + rank), y = torch::randint(0, 4, {8}, gen);
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  }

  // Whether every parameter equals rank 0's.
  bool SameOnEveryRank(Net& net) {
    bool same = true;
    for (const auto& item : net->named_parameters()) {
      at::Tensor rank0 = item.value().detach().clone();
      pg->Broadcast(rank0, 0)->Wait();
      if (!torch::equal(rank0, item.value().detach())) {
        ADD_FAILURE() << item.key() << " differs from rank 0's on rank " << rank;
        same = false;
      }
    }
    return same;
  }
};

TEST_F(DdpOrderTest, QatPreparedAfterDdpFailsOnEveryRankNamingTheQuantizers) {
  torch::manual_seed(1);
  Net net;
  DistributedDataParallel ddp(net.ptr(), pg);
  qat::Prepare(*net, qat::PresetConfig("w4a8"));
  try {
    Backward(net, 0);
    FAIL() << "QAT after DDP trained without an error";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("DistributedDataParallel on rank " + std::to_string(rank) +
                        ": the model's parameters changed after DDP was built"),
              std::string::npos)
        << what;
    // w4a8: LSQ step sizes (parameters) in the middle layer; the first and
    // last layers' 8-bit observers are buffers, which DDP broadcasts anyway.
    EXPECT_NE(what.find("1 trainable parameter(s) that DDP's buckets do not: mid.weight_quantizer.log_scale"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("qat::Prepare after DistributedDataParallel"), std::string::npos) << what;
    EXPECT_EQ(what.find("Exception raised from"), std::string::npos) << what;
  }
}

// Without Calibrate, each quantizer takes its step size from the first batch
// it sees, on each rank its own; DDP's broadcast after the first backward
// (Note [Parameters set by the first forward]) makes the ranks agree.
TEST_F(DdpOrderTest, QatWithoutCalibrateTrainsAlikeOnEveryRank) {
  torch::manual_seed(2);
  Net net;
  // w4a4_lsq: the inputs' LSQ step sizes come from the first batch seen.
  qat::Prepare(*net, qat::PresetConfig("w4a4_lsq"));
  DistributedDataParallel ddp(net.ptr(), pg);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    Backward(net, step);
    opt.step();
  }
  EXPECT_TRUE(SameOnEveryRank(net));
}

lowbit::sparsity::SparseConfig TwoFourSrSte() { return lowbit::sparsity::SparseConfig{}; }

TEST_F(DdpOrderTest, SparsifierAfterDdpTrainsAlikeFromRankOwnWeights) {
  torch::manual_seed(10 + rank);  // each rank its own initial weights
  Net net;
  DistributedDataParallel ddp(net.ptr(), pg);
  sparsity::Sparsifier sparsifier(*net, TwoFourSrSte());
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  for (int step = 0; step < 4; ++step) {
    opt.zero_grad();
    Backward(net, step);
    sparsifier.Step(opt);
  }
  EXPECT_TRUE(SameOnEveryRank(net));
  EXPECT_DOUBLE_EQ(sparsifier.MaskSparsity(), 0.5);
}

// Note [Weights overwritten under the Sparsifier]: built before DDP from each
// rank's own weights, the Sparsifier of every rank but 0 holds masks and
// dense weights DDP's broadcast replaced; its first step says so.
TEST_F(DdpOrderTest, SparsifierBeforeDdpOnRanksWithOwnWeightsIsNamed) {
  torch::manual_seed(10 + rank);
  Net net;
  sparsity::Sparsifier sparsifier(*net, TwoFourSrSte());
  DistributedDataParallel ddp(net.ptr(), pg);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05));
  opt.zero_grad();
  Backward(net, 0);
  std::string error;
  try {
    sparsifier.Step(opt);
  } catch (const c10::Error& e) {
    error = e.what();
  }
  if (rank == 0) {
    EXPECT_EQ(error, "") << "rank 0's weights are its own";
  } else {
    EXPECT_NE(error.find("Sparsifier: layer 'fc1': its weight is no longer what the Sparsifier wrote"),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("build the Sparsifier after DistributedDataParallel, or seed every rank alike"),
              std::string::npos)
        << error;
  }
  // With one seed everywhere the same order is fine.
  torch::manual_seed(10);
  Net alike;
  sparsity::Sparsifier alike_sparsifier(*alike, TwoFourSrSte());
  DistributedDataParallel alike_ddp(alike.ptr(), pg);
  torch::optim::SGD alike_opt(alike->parameters(), torch::optim::SGDOptions(0.05));
  for (int step = 0; step < 2; ++step) {
    alike_opt.zero_grad();
    Backward(alike, step);
    alike_sparsifier.Step(alike_opt);
  }
  EXPECT_TRUE(SameOnEveryRank(alike));
}

}  // namespace
}  // namespace lowbit::comm
