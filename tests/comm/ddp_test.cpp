// DistributedDataParallel against the same computation in one process: P ranks
// with batch b each must produce the gradients (and, after SGD steps, the
// parameters) of one process on the concatenated P*b batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/comm/distributed_data_parallel.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::comm {
namespace {

using testing::Pg;

// Identity forward; its backward throws, to fail a backward pass midway.
struct ThrowInBackward : torch::autograd::Function<ThrowInBackward> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, torch::Tensor x) { return x.clone(); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list) {
    throw std::runtime_error("injected backward failure");
  }
};

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int hidden = 32) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)));
    fc1 = register_module("fc1", torch::nn::Linear(4 * 6 * 6, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 5));
    side = register_module("side", torch::nn::Linear(hidden, 5));  // used only when asked
  }
  torch::Tensor forward(torch::Tensor x, bool use_side = false, bool fail_backward = false) {
    x = torch::relu(conv->forward(x)).flatten(1);
    x = torch::relu(fc1->forward(x));
    if (fail_backward) x = ThrowInBackward::apply(x);
    return use_side ? fc2->forward(x) + side->forward(x) : fc2->forward(x);
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, side{nullptr};
};
TORCH_MODULE(Net);

constexpr int kBatch = 6;  // per rank

// The whole world's batch for step `step`; rank r uses rows [r*b, (r+1)*b).
std::pair<torch::Tensor, torch::Tensor> GlobalBatch(int step, int size) {
  torch::Generator gen = at::detail::createCPUGenerator(1000 + step);
  torch::Tensor x = torch::randn({kBatch * size, 1, 8, 8}, gen);
  torch::Tensor y = torch::randint(0, 5, {kBatch * size}, gen);
  return {x, y};
}

Net MakeNet(uint64_t seed) {
  torch::manual_seed(seed);
  return Net();
}

double MaxRelError(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

class DdpTest : public ::testing::Test {
 protected:
  std::shared_ptr<ProcessGroup> pg = Pg();
  const int rank = pg->Rank();
  const int size = pg->Size();
};

TEST_F(DdpTest, GradientsMatchOneProcessOnTheConcatenatedBatch) {
  // Different seeds per rank: DDP must broadcast rank 0's parameters.
  Net model = MakeNet(rank == 0 ? 1 : 50 + rank);
  DistributedDataParallel ddp(model.ptr(), pg, {.first_bucket_mb = 0.001, .bucket_cap_mb = 0.002});
  EXPECT_GT(ddp.BucketLayout().size(), 2u);
  Net reference = MakeNet(1);

  auto [x, y] = GlobalBatch(0, size);
  torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                       y.narrow(0, rank * kBatch, kBatch))
      .backward();
  torch::nn::functional::cross_entropy(reference->forward(x), y).backward();

  auto ours = model->named_parameters();
  auto theirs = reference->named_parameters();
  for (const auto& item : theirs) {
    if (item.key().rfind("side", 0) == 0) continue;
    const torch::Tensor& g = ours[item.key()].grad();
    ASSERT_TRUE(g.defined()) << item.key();
    EXPECT_LE(MaxRelError(g, item.value().grad()), 1e-5) << item.key();
  }
  EXPECT_EQ(ddp.LastStepStats().buckets, static_cast<int>(ddp.BucketLayout().size()));
  EXPECT_EQ(ddp.LastStepStats().exchange_bytes_sent, size > 1 ? ddp.LastStepStats().dense_bytes : 0);
  EXPECT_GE(ddp.LastStepStats().bytes_sent, ddp.LastStepStats().exchange_bytes_sent);
  EXPECT_GT(ddp.LastStepStats().dense_bytes, 0);
}

TEST_F(DdpTest, TwentySgdStepsMatchOneProcess) {
  Net model = MakeNet(7);
  DistributedDataParallel ddp(model.ptr(), pg);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  Net reference = MakeNet(7);
  torch::optim::SGD ref_opt(reference->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (int step = 0; step < 20; ++step) {
    auto [x, y] = GlobalBatch(step, size);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                         y.narrow(0, rank * kBatch, kBatch))
        .backward();
    opt.step();
    ref_opt.zero_grad();
    torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
    ref_opt.step();
  }
  auto ours = model->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    EXPECT_LE(MaxRelError(ours[item.key()], item.value()), 1e-4) << item.key();
  }
}

TEST_F(DdpTest, BucketsFollowReverseParameterOrderAndCaps) {
  Net model = MakeNet(3);
  // fc1.weight is 144 x 32 floats = 18 KB; caps below it put it alone.
  DistributedDataParallel ddp(model.ptr(), pg, {.first_bucket_mb = 0.001, .bucket_cap_mb = 0.01});
  std::vector<std::string> order;
  for (const auto& bucket : ddp.BucketLayout()) {
    for (const auto& name : bucket) order.push_back(name);
  }
  std::vector<std::string> expected;
  for (const auto& item : model->named_parameters()) expected.insert(expected.begin(), item.key());
  EXPECT_EQ(order, expected);
  // First bucket, cap 0.001 MB = 1048 bytes: side.bias (20 B) + side.weight
  // (640 B) + fc2.bias (20 B) = 680 B; fc2.weight (640 B) would pass the cap.
  EXPECT_EQ(ddp.BucketLayout().front(), (std::vector<std::string>{"side.bias", "side.weight", "fc2.bias"}));
  // Later buckets use the 0.01 MB cap: fc1.weight (18 KB) is alone in its own.
  bool alone = false;
  for (const auto& bucket : ddp.BucketLayout()) alone |= bucket == std::vector<std::string>{"fc1.weight"};
  EXPECT_TRUE(alone);
}

TEST_F(DdpTest, NoSyncAccumulatesThenAveragesTheSum) {
  Net model = MakeNet(5);
  DistributedDataParallel ddp(model.ptr(), pg);
  Net reference = MakeNet(5);
  auto [x0, y0] = GlobalBatch(10, size);
  auto [x1, y1] = GlobalBatch(11, size);
  {
    auto guard = ddp.NoSync();
    torch::nn::functional::cross_entropy(model->forward(x0.narrow(0, rank * kBatch, kBatch)),
                                         y0.narrow(0, rank * kBatch, kBatch))
        .backward();
  }
  const int64_t collectives_before = pg->Traffic().collectives;
  torch::nn::functional::cross_entropy(model->forward(x1.narrow(0, rank * kBatch, kBatch)),
                                       y1.narrow(0, rank * kBatch, kBatch))
      .backward();
  EXPECT_GT(pg->Traffic().collectives, collectives_before);
  torch::nn::functional::cross_entropy(reference->forward(x0), y0).backward();
  torch::nn::functional::cross_entropy(reference->forward(x1), y1).backward();
  auto ours = model->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    if (item.key().rfind("side", 0) == 0) continue;
    EXPECT_LE(MaxRelError(ours[item.key()].grad(), item.value().grad()), 1e-5) << item.key();
  }
}

TEST_F(DdpTest, NoSyncSendsNothing) {
  Net model = MakeNet(5);
  DistributedDataParallel ddp(model.ptr(), pg);
  auto [x, y] = GlobalBatch(3, size);
  const int64_t before = pg->Traffic().collectives;
  {
    auto guard = ddp.NoSync();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
  }
  EXPECT_EQ(pg->Traffic().collectives, before);
}

TEST_F(DdpTest, ParametersWithoutGradientsOnSomeRanks) {
  // Rank 0 uses the side branch, the others do not: their side gradients count
  // as zeros, exactly as in one process where only rank 0's rows reach it.
  Net model = MakeNet(9);
  DistributedDataParallel ddp(model.ptr(), pg);
  Net reference = MakeNet(9);
  auto [x, y] = GlobalBatch(4, size);
  torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch), rank == 0),
                                       y.narrow(0, rank * kBatch, kBatch))
      .backward();
  EXPECT_EQ(ddp.LastStepStats().unused_parameters, rank == 0 ? 0 : 2);
  // Reference: mean over ranks of per-rank mean losses.
  torch::Tensor loss = torch::zeros({});
  for (int r = 0; r < size; ++r) {
    loss = loss + torch::nn::functional::cross_entropy(
                      reference->forward(x.narrow(0, r * kBatch, kBatch), r == 0), y.narrow(0, r * kBatch, kBatch));
  }
  (loss / size).backward();
  auto ours = model->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    EXPECT_LE(MaxRelError(ours[item.key()].grad(), item.value().grad()), 1e-5) << item.key();
  }
}

TEST_F(DdpTest, BackwardThatThrowsMidwayLeavesNoStaleState) {
  Net model = MakeNet(17);
  // Small first bucket {side.bias, side.weight, fc2.bias}: it is complete and
  // launched before the failure, which cuts fc1 and conv off.
  DistributedDataParallel ddp(model.ptr(), pg, {.first_bucket_mb = 0.001, .bucket_cap_mb = 0.01});
  Net reference = MakeNet(17);
  auto [x, y] = GlobalBatch(7, size);
  at::Tensor mine = x.narrow(0, rank * kBatch, kBatch), mine_y = y.narrow(0, rank * kBatch, kBatch);
  const int64_t before = pg->Traffic().collectives;
  EXPECT_THROW(torch::nn::functional::cross_entropy(model->forward(mine, true, true), mine_y).backward(),
               std::exception);
  EXPECT_GT(pg->Traffic().collectives, before);  // the first bucket was in flight
  for (auto& p : model->parameters()) p.mutable_grad().zero_();
  torch::nn::functional::cross_entropy(model->forward(mine, true), mine_y).backward();
  torch::Tensor loss = torch::zeros({});
  for (int r = 0; r < size; ++r) {
    loss = loss + torch::nn::functional::cross_entropy(reference->forward(x.narrow(0, r * kBatch, kBatch), true),
                                                       y.narrow(0, r * kBatch, kBatch));
  }
  (loss / size).backward();
  auto ours = model->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    EXPECT_LE(MaxRelError(ours[item.key()].grad(), item.value().grad()), 1e-5) << item.key();
  }
}

TEST_F(DdpTest, GradientsReplacedByZeroGradSetToNoneStillSync) {
  Net model = MakeNet(11);
  DistributedDataParallel ddp(model.ptr(), pg);
  Net reference = MakeNet(11);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // zero_grad(set_to_none)
  auto [x, y] = GlobalBatch(5, size);
  torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                       y.narrow(0, rank * kBatch, kBatch))
      .backward();
  torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
  auto ours = model->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    if (item.key().rfind("side", 0) == 0) continue;
    EXPECT_LE(MaxRelError(ours[item.key()].grad(), item.value().grad()), 1e-5) << item.key();
  }
}

// torch::load and Module::load set_() every parameter after DDP exists,
// which gives each a new gradient accumulator: DDP must still average (it
// silently stopped before; see Note [Parameters replaced in place]).
TEST_F(DdpTest, ParametersReplacedInPlaceByLoadStillSync) {
  Net model = MakeNet(12);
  DistributedDataParallel ddp(model.ptr(), pg);
  Net reference = MakeNet(12);
  const std::string path = ::testing::TempDir() + "/ddp_test_load_" + std::to_string(rank) + ".pt";
  torch::save(reference, path);
  torch::load(model, path);  // set_() on every parameter
  auto [x, y] = GlobalBatch(6, size);
  for (int step = 0; step < 2; ++step) {
    model->zero_grad();
    reference->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                         y.narrow(0, rank * kBatch, kBatch))
        .backward();
    torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
    auto ours = model->named_parameters();
    for (const auto& item : reference->named_parameters()) {
      if (item.key().rfind("side", 0) == 0) continue;
      EXPECT_LE(MaxRelError(ours[item.key()].grad(), item.value().grad()), 1e-5) << item.key() << " step " << step;
    }
  }
  std::remove(path.c_str());
}

// A hook that averages out of place, to check DDP copies results back.
class OutOfPlaceHook final : public CommHook {
 public:
  OutOfPlaceHook(std::shared_ptr<ProcessGroup> pg, std::string config) : pg_(std::move(pg)), config_(std::move(config)) {}
  std::string Name() const override { return "out_of_place"; }
  std::string Config() const override { return config_; }
  std::shared_ptr<Work> RunHook(GradBucket& bucket) override {
    at::Tensor copy = bucket.buffer.clone();
    auto work = pg_->AllReduce(copy, ReduceOp::kSum);
    work->Wait();
    return std::make_shared<CompletedWork>(std::vector<at::Tensor>{copy / pg_->Size()});
  }
  HookState StateDict() const override { return {}; }
  void LoadStateDict(const HookState&) override {}

 private:
  std::shared_ptr<ProcessGroup> pg_;
  std::string config_;
};

TEST_F(DdpTest, OutOfPlaceHookResultsAreCopiedBack) {
  Net model = MakeNet(13);
  DistributedDataParallel ddp(model.ptr(), pg);
  ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "same"));
  Net reference = MakeNet(13);
  auto [x, y] = GlobalBatch(6, size);
  torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                       y.narrow(0, rank * kBatch, kBatch))
      .backward();
  torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
  EXPECT_LE(MaxRelError(model->fc1->weight.grad(), reference->fc1->weight.grad()), 1e-5);
}

TEST_F(DdpTest, HookConfiguredDifferentlyOnOneRankIsCaughtAtRegistration) {
  if (size == 1) GTEST_SKIP() << "needs two ranks";
  Net model = MakeNet(13);
  DistributedDataParallel ddp(model.ptr(), pg);
  try {
    ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, rank == size - 1 ? "bits=4" : "bits=8"));
    FAIL() << "expected a configuration mismatch";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("comm hook configuration on rank " + std::to_string(size - 1)), std::string::npos) << what;
    EXPECT_NE(what.find("bits=4"), std::string::npos) << what;
  }
}

TEST_F(DdpTest, ModelThatDiffersOnOneRankIsNamed) {
  if (size == 1) GTEST_SKIP() << "needs two ranks";
  torch::manual_seed(1);
  Net model(rank == size - 1 ? 33 : 32);
  try {
    DistributedDataParallel ddp(model.ptr(), pg);
    FAIL() << "expected a model mismatch";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank " + std::to_string(size - 1) + " differs from rank 0"), std::string::npos) << what;
    EXPECT_NE(what.find("fc1.weight"), std::string::npos) << what;
  }
}

TEST_F(DdpTest, BucketOptionsThatDifferOnOneRankAreNamed) {
  if (size == 1) GTEST_SKIP() << "needs two ranks";
  Net model = MakeNet(14);
  try {
    DistributedDataParallel ddp(model.ptr(), pg, {.bucket_cap_mb = rank == size - 1 ? 0.5 : 25.0});
    FAIL() << "expected a bucket options mismatch";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank " + std::to_string(size - 1) + " differs from rank 0"), std::string::npos) << what;
    EXPECT_NE(what.find("bucket_cap_mb=0.5"), std::string::npos) << what;
  }
}

TEST_F(DdpTest, BuffersAreBroadcastFromRankZero) {
  torch::manual_seed(1);
  auto bn = std::make_shared<torch::nn::BatchNorm1dImpl>(4);
  bn->running_mean.fill_(rank);
  DistributedDataParallel ddp(bn, pg);
  EXPECT_TRUE(torch::equal(bn->running_mean, torch::zeros({4})));
  bn->train();
  bn->forward(torch::randn({8, 4}) + rank).sum().backward();
  // After the synchronised backward, rank 0's running statistics win again.
  at::Tensor mean = bn->running_mean.clone();
  pg->Broadcast(mean, 0)->Wait();
  EXPECT_TRUE(torch::equal(bn->running_mean, mean));
}

// One backward of `model` on this rank's rows of step `step`'s batch.
void Backward(Net& model, int step, int rank, int size) {
  auto [x, y] = GlobalBatch(step, size);
  torch::nn::functional::cross_entropy(model->forward(x.narrow(0, rank * kBatch, kBatch)),
                                       y.narrow(0, rank * kBatch, kBatch))
      .backward();
}

// Note [Parameters added after DDP]: every rank fails at its next backward,
// naming the tensor and the cure, and keeps failing until the model is fixed.
TEST_F(DdpTest, ParameterRegisteredAfterDdpIsNamedOnEveryRank) {
  Net model = MakeNet(21);
  DistributedDataParallel ddp(model.ptr(), pg);
  Backward(model, 0, rank, size);
  model->fc2->register_parameter("late_scale", torch::ones({5}));
  for (int attempt = 0; attempt < 2; ++attempt) {
    lowbit::testing::ExpectError([&] { Backward(model, 1, rank, size); },
                                 "DistributedDataParallel on rank " + std::to_string(rank) +
                                     ": the model's parameters changed after DDP was built. The model has 1 "
                                     "trainable parameter(s) that DDP's buckets do not: fc2.late_scale Float [5]");
  }
  lowbit::testing::ExpectError([&] { Backward(model, 1, rank, size); },
                               "call Prepare, and anything else that adds parameters, before constructing "
                               "DistributedDataParallel");
  // Frozen, the late tensor needs no averaging: training goes on, and so it
  // does with a bucketed parameter frozen after DDP (sent as zeros).
  model->fc1->bias.set_requires_grad(false);
  model->fc2->named_parameters(false)["late_scale"].set_requires_grad(false);
  Backward(model, 2, rank, size);
  EXPECT_EQ(ddp.LastStepStats().buckets, static_cast<int>(ddp.BucketLayout().size()));
}

TEST_F(DdpTest, LayerReplacedOrParameterUnfrozenAfterDdpIsNamed) {
  {
    Net model = MakeNet(22);
    model->side->weight.set_requires_grad(false);
    DistributedDataParallel ddp(model.ptr(), pg);
    model->side->weight.set_requires_grad(true);
    lowbit::testing::ExpectError([&] { Backward(model, 0, rank, size); },
                                 "Parameter(s) side.weight Float [5, 32] were frozen (requires_grad false) when DDP "
                                 "was built and train now, unaveraged");
  }
  Net model = MakeNet(23);
  DistributedDataParallel ddp(model.ptr(), pg);
  model->fc2 = model->replace_module("fc2", torch::nn::Linear(32, 5));
  try {
    Backward(model, 0, rank, size);
    FAIL() << "a replaced layer trained without an error";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("2 trainable parameter(s) that DDP's buckets do not: fc2.weight Float [5, 32], fc2.bias"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("DDP's buckets hold 2 parameter(s) the model no longer has: fc2."), std::string::npos) << what;
  }
}

// Note [Parameters set by the first forward]: a module that sets a parameter
// from the first batch it sees (as QAT's LSQ step sizes do without
// Calibrate) starts equal on every rank, rank 0's value.
TEST_F(DdpTest, ParametersSetByTheFirstForwardAgreeAcrossRanks) {
  struct LazyScaleImpl : torch::nn::Module {
    LazyScaleImpl() { scale = register_parameter("scale", torch::zeros({1})); }
    torch::Tensor forward(torch::Tensor x) {
      if (!initialized) {
        torch::NoGradGuard no_grad;
        scale.fill_(x.abs().mean().item<double>());
        initialized = true;
      }
      return (x * scale).sum();
    }
    torch::Tensor scale;
    bool initialized = false;
  };
  auto model = std::make_shared<LazyScaleImpl>();
  DistributedDataParallel ddp(model, pg);
  model->forward(torch::full({4}, 1.0 + rank)).backward();  // each rank its own first value
  at::Tensor rank0 = model->scale.detach().clone();
  pg->Broadcast(rank0, 0)->Wait();
  EXPECT_TRUE(torch::equal(model->scale.detach(), rank0)) << model->scale.item<double>();
  EXPECT_EQ(model->scale.item<double>(), 1.0);  // rank 0 saw ones
  // The gradient is still the mean of every rank's own.
  EXPECT_DOUBLE_EQ(model->scale.grad().item<double>(), 4.0 * (1.0 + (size - 1) / 2.0));
}

TEST_F(DdpTest, ASecondHookIsRefusedUntilTheFirstIsUnregistered) {
  Net model = MakeNet(24);
  DistributedDataParallel ddp(model.ptr(), pg);
  ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "first"));
  lowbit::testing::ExpectError([&] { ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "second")); },
                               "RegisterCommHook: comm hook 'first' is already registered; registering 'second' would "
                               "silently replace it");
  EXPECT_EQ(ddp.comm_hook().Config(), "first");
  ddp.UnregisterCommHook();
  EXPECT_EQ(ddp.comm_hook().Name(), "allreduce");
  ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "second"));
  EXPECT_EQ(ddp.comm_hook().Config(), "second");
  // An optimizer taking over the exchange would drop the user's hook.
  lowbit::testing::ExpectError(
      [&] { ddp.RegisterOwnedCommHook(std::make_shared<LocalHook>(), "Owner", "OwnerOptions::exchange_hook"); },
      "Owner does its own exchange, but comm hook 'second' is registered on this DDP and would be "
      "silently dropped: do not register it (give that exchange to OwnerOptions::exchange_hook instead)");
  ddp.UnregisterCommHook();
  ddp.RegisterOwnedCommHook(std::make_shared<LocalHook>(), "Owner", "OwnerOptions::exchange_hook");
  lowbit::testing::ExpectError([&] { ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "third")); },
                               "(give that exchange to OwnerOptions::exchange_hook instead)");
  lowbit::testing::ExpectError([&] { ddp.UnregisterCommHook(); }, "the comm hook belongs to Owner");
  // The plain allreduce is the default's exchange: replacing it loses nothing.
  Net plain = MakeNet(24);
  DistributedDataParallel plain_ddp(plain.ptr(), pg);
  plain_ddp.RegisterCommHook(std::make_shared<AllReduceHook>(pg));
  plain_ddp.RegisterCommHook(std::make_shared<OutOfPlaceHook>(pg, "after allreduce"));
  EXPECT_EQ(plain_ddp.comm_hook().Config(), "after allreduce");
}

// An exchange after backward (an owning optimizer's, in its step) counts in
// the step's bytes; the bucket exchanges alone are in exchange_bytes_*.
TEST_F(DdpTest, StepBytesCountWhatRunsBetweenBackwards) {
  Net model = MakeNet(25);
  DistributedDataParallel ddp(model.ptr(), pg);
  Backward(model, 0, rank, size);
  Backward(model, 1, rank, size);  // the first step's parameter broadcast is behind us
  const DdpStepStats after_backward = ddp.LastStepStats();
  EXPECT_EQ(after_backward.bytes_sent, after_backward.exchange_bytes_sent);
  const TrafficCounters before = pg->Traffic();
  at::Tensor extra = torch::ones({1000});
  pg->AllReduce(extra)->Wait();  // as an optimizer's own exchange would
  const int64_t extra_sent = pg->Traffic().bytes_sent - before.bytes_sent;
  EXPECT_EQ(extra_sent > 0, size > 1);
  EXPECT_EQ(ddp.LastStepStats().bytes_sent, after_backward.exchange_bytes_sent + extra_sent);
  EXPECT_EQ(ddp.LastStepStats().exchange_bytes_sent, after_backward.exchange_bytes_sent);
  // The next backward closes the window: the total stays the step's.
  const int64_t step_total = ddp.LastStepStats().bytes_sent;
  {
    auto guard = ddp.NoSync();
    Backward(model, 2, rank, size);
  }
  EXPECT_EQ(ddp.LastStepStats().bytes_sent, step_total);
  Backward(model, 3, rank, size);
  EXPECT_EQ(ddp.LastStepStats().bytes_sent, ddp.LastStepStats().exchange_bytes_sent);
}

TEST_F(DdpTest, BadOptionsAreRefused) {
  Net model = MakeNet(1);
  EXPECT_THROW(DistributedDataParallel(model.ptr(), pg, {.bucket_cap_mb = 0}), c10::Error);
  EXPECT_THROW(DistributedDataParallel(model.ptr(), nullptr), c10::Error);
}

}  // namespace
}  // namespace lowbit::comm
