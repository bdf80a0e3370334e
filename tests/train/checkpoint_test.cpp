// Checkpoint: a run saved after K steps and restored into freshly (and
// differently) initialised objects continues bit for bit like the run that
// never stopped, with DDP and an error-feedback hook, an 8-bit optimizer,
// QAT, a Sparsifier, dropout (the RNG) and, separately, 1-bit Adam. Damaged
// files (every truncation point tried, seeded byte flips), a wrong model, a
// missing rank file and a changed world size give errors that say so.
// Runs as one process and under mpirun -np 2.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "lowbit/comm/distributed_data_parallel.h"
#include "lowbit/compress/registry.h"
#include "lowbit/comm/local_process_group.h"
#include "lowbit/optimizers/diloco.h"
#include "lowbit/optimizers/onebit_adam.h"
#include "lowbit/optimizers/optim_8bit.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/sparsifier.h"
#include "lowbit/train/checkpoint.h"
#include "tests/common/expect_error.h"
#include "tests/common/test_env.h"

namespace lowbit::train {
namespace {

using lowbit::testing::ExpectError;
using lowbit::testing::Pg;
namespace nn = torch::nn;

struct NetImpl : nn::Module {
  explicit NetImpl(int64_t hidden = 64) {
    fc1 = register_module("fc1", qat::Linear(32, hidden));
    fc2 = register_module("fc2", qat::Linear(hidden, 64));
    head = register_module("head", nn::Sequential(nn::ReLU(), nn::Linear(64, 10)));
  }
  at::Tensor forward(at::Tensor x) {
    x = torch::dropout(torch::relu(fc1(x)), 0.2, is_training());
    return head->forward(fc2(x));
  }
  qat::Linear fc1{nullptr}, fc2{nullptr};
  nn::Sequential head{nullptr};
};
TORCH_MODULE(Net);

// Rank r's batch at step t: the same on every run.
std::pair<at::Tensor, at::Tensor> Batch(int64_t step) {
  auto gen = at::detail::createCPUGenerator(1000 * step + Pg()->Rank());
  return {torch::randn({16, 32}, gen), torch::randint(0, 10, {16}, gen)};
}

std::string Dir(const std::string& name) {
  // One directory per test, the same on every rank (ranks share the file system).
  const std::string dir = ::testing::TempDir() + "/lowbit_checkpoint_test_" + name + "_np" + std::to_string(Pg()->Size());
  if (Pg()->Rank() == 0) std::filesystem::remove_all(dir);
  Pg()->Barrier()->Wait();
  return dir;
}

// One training setup: everything a checkpoint holds.
struct TrainingRun {
  enum Kind { kEightBit, kOneBit };
  // `hook`: the comm hook of a kEightBit run ("" keeps DDP's default).
  TrainingRun(uint64_t seed, Kind kind, const std::string& hook = "qsgd") {
    torch::manual_seed(seed);
    net = Net();
    qat::Prepare(*net, qat::PresetConfig("w4a8"));
    qat::Calibrate(*net, [&] { net->forward(torch::randn({32, 32}, at::detail::createCPUGenerator(5))); });
    if (kind == kEightBit) {
      sparsifier = std::make_unique<sparsity::Sparsifier>(
          *net, sparsity::SparseConfig{},
          std::vector<std::pair<std::string, std::optional<sparsity::SparseConfig>>>{{"fc1", std::nullopt},
                                                                                     {"head.*", std::nullopt}});
    }
    ddp = std::make_unique<comm::DistributedDataParallel>(net.ptr(), Pg());
    if (kind == kEightBit) {
      if (!hook.empty()) ddp->RegisterCommHook(compress::MakeCommHook(Pg(), hook));  // qsgd: per-rank residuals
      // min_8bit_size 256: fc2's weight (4096) and fc1's (2048) get 8-bit state.
      opt = std::make_unique<optim::AdamW8bit>(net->parameters(), optim::AdamW8bitOptions(1e-2).min_8bit_size(256));
    } else {
      opt = std::make_unique<optim::OneBitAdam>(net->parameters(), *ddp,
                                                optim::OneBitAdamOptions(1e-2).freeze_step(2));
    }
  }
  void Step() {
    auto [x, y] = Batch(step);
    opt->zero_grad();
    nn::functional::cross_entropy(net->forward(x), y).backward();
    if (sparsifier) {
      sparsifier->Step(*opt);
    } else {
      opt->step();
    }
    ++step;
  }
  Checkpoint Make(const std::string& dir) {
    Checkpoint ckpt(dir, Pg());
    ckpt.Model(*net).Optimizer("opt", *opt).Ddp(*ddp).Counter("step", &step);
    if (sparsifier) ckpt.Sparsifier(*sparsifier);
    return ckpt;
  }
  Net net{nullptr};
  std::unique_ptr<sparsity::Sparsifier> sparsifier;
  std::unique_ptr<comm::DistributedDataParallel> ddp;
  std::unique_ptr<torch::optim::Optimizer> opt;
  int64_t step = 0;
};

void ExpectContinuesBitForBit(TrainingRun::Kind kind, const std::string& name) {
  const std::string dir = Dir(name);
  TrainingRun a(1, kind);
  for (int i = 0; i < 5; ++i) a.Step();
  a.Make(dir).Save();
  for (int i = 0; i < 5; ++i) a.Step();

  TrainingRun b(2, kind);  // other initial weights: everything must come from the checkpoint
  Checkpoint ckpt = b.Make(dir);
  ASSERT_TRUE(ckpt.Exists());
  ckpt.Restore();
  EXPECT_EQ(b.step, 5);
  EXPECT_EQ(ckpt.generation(), 1);
  for (int i = 0; i < 5; ++i) b.Step();
  auto pa = a.net->named_parameters(), pb = b.net->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << name << ": " << p.key();
  auto ba = a.net->named_buffers(), bb = b.net->named_buffers();
  for (const auto& p : ba) EXPECT_TRUE(torch::equal(p.value(), bb[p.key()])) << name << ": " << p.key();
}

TEST(CheckpointTest, EightBitQatSparseHookContinuesBitForBit) { ExpectContinuesBitForBit(TrainingRun::kEightBit, "eightbit"); }

TEST(CheckpointTest, OneBitAdamContinuesBitForBit) { ExpectContinuesBitForBit(TrainingRun::kOneBit, "onebit"); }

TEST(CheckpointTest, GenerationsReplaceEachOther) {
  const std::string dir = Dir("generations");
  TrainingRun a(1, TrainingRun::kEightBit);
  Checkpoint ckpt = a.Make(dir);
  for (int g = 1; g <= 3; ++g) {
    a.Step();
    ckpt.Save();
    EXPECT_EQ(ckpt.generation(), g);
  }
  Pg()->Barrier()->Wait();
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    EXPECT_TRUE(f == "manifest" || f.find("-g3.ckpt") != std::string::npos) << "left behind: " << f;
    EXPECT_EQ(f.find(".tmp"), std::string::npos) << f;
    ++files;
  }
  EXPECT_EQ(files, Pg()->Size() + 1);
}

// What --resume auto relies on: Found() is false before the first save, and
// a save interrupted at any point (this rank's next file written or half
// written, the manifest's replacement half written) is never picked: the
// manifest still names the last complete generation, which restores.
TEST(CheckpointTest, InterruptedSaveIsNeverPicked) {
  const std::string dir = Dir("interrupted");
  TrainingRun a(1, TrainingRun::kEightBit);
  Checkpoint ckpt = a.Make(dir);
  EXPECT_FALSE(ckpt.Found());
  for (int i = 0; i < 3; ++i) a.Step();
  ckpt.Save();
  const auto saved = a.net->named_parameters();
  std::map<std::string, at::Tensor> expected;
  for (const auto& p : saved) expected[p.key()] = p.value().clone();
  a.Step();
  // The next save dies: rank 0 finished its file for generation 2, the last
  // rank had written part of it, and rank 0 had begun the new manifest.
  const int rank = Pg()->Rank(), last = Pg()->Size() - 1;
  std::string bytes;
  {
    std::ifstream in(ckpt.RankPath(rank, 1), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  if (rank == 0) std::ofstream(ckpt.RankPath(rank, 2), std::ios::binary) << bytes;
  if (rank == last) std::ofstream(ckpt.RankPath(rank, 2) + ".tmp", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  if (rank == 0) std::ofstream(ckpt.ManifestPath() + ".tmp") << "lowbit-checkpoint 1\ngenera";
  Pg()->Barrier()->Wait();

  TrainingRun b(2, TrainingRun::kEightBit);
  Checkpoint resumed = b.Make(dir);
  ASSERT_TRUE(resumed.Found());
  resumed.Restore();
  EXPECT_EQ(resumed.generation(), 1);
  EXPECT_EQ(b.step, 3);
  for (const auto& p : b.net->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), expected.at(p.key()))) << p.key();
  // Saving again goes past the dead generation and leaves no debris behind.
  resumed.Save();
  EXPECT_EQ(resumed.generation(), 2);
}

// Ranks that see different directories (one without the checkpoint) are told
// which, instead of some resuming and others starting fresh.
TEST(CheckpointTest, FoundOnlyOnSomeRanksIsNamed) {
  if (Pg()->Size() < 2) GTEST_SKIP() << "needs two ranks";
  const std::string dir = Dir("found_some");
  TrainingRun a(1, TrainingRun::kEightBit);
  a.Make(dir).Save();
  const std::string other = dir + "_elsewhere";
  Checkpoint mine = a.Make(Pg()->Rank() == 0 ? dir : other);
  // Each rank names its own path.
  ExpectError([&] { (void)mine.Found(); }, "Checkpoint::Found: rank(s) 0 see " + mine.ManifestPath() + " but rank(s) 1 do not");
}

// DiLoCo through Checkpoint::State: its global copy, outer momentum and step
// come back exactly, and a file without the entry is refused, naming it.
TEST(CheckpointTest, ExtraStateRoundTripsAndIsRequired) {
  const std::string dir = Dir("extra_state");
  auto make_params = [] {
    auto gen = at::detail::createCPUGenerator(5);
    return std::vector<at::Tensor>{torch::randn({6, 4}, gen).requires_grad_(), torch::randn({4}, gen).requires_grad_()};
  };
  std::vector<at::Tensor> params = make_params();
  optim::DiLoCo outer(params, Pg(), optim::DiLoCoOptions().sync_every(2));
  for (int s = 0; s < 3; ++s) {  // one sync, then a step into the next interval
    torch::NoGradGuard no_grad;
    for (auto& p : params) p.add_(0.1 * (Pg()->Rank() + 1));
    outer.Step();
  }
  Checkpoint save(dir, Pg());
  save.State("diloco", [&](auto& a) { outer.Save(a); }, [&](auto& a) { outer.Load(a); });
  save.Save();
  torch::serialize::OutputArchive want;
  outer.Save(want);

  std::vector<at::Tensor> fresh = make_params();
  optim::DiLoCo restored(fresh, Pg(), optim::DiLoCoOptions().sync_every(2));
  Checkpoint load(dir, Pg());
  load.State("diloco", [&](auto& a) { restored.Save(a); }, [&](auto& a) { restored.Load(a); });
  load.Restore();
  EXPECT_EQ(restored.steps(), 3);
  torch::serialize::OutputArchive got;
  restored.Save(got);
  std::ostringstream want_bytes, got_bytes;
  want.save_to(want_bytes);
  got.save_to(got_bytes);
  EXPECT_EQ(want_bytes.str(), got_bytes.str());

  Checkpoint other(dir, Pg());
  other.State("outer", [&](auto& a) { restored.Save(a); }, [&](auto& a) { restored.Load(a); });
  ExpectError([&] { other.Restore(); }, "has no state 'outer'");
}

TEST(CheckpointTest, WrongModelIsNamed) {
  const std::string dir = Dir("wrong_model");
  TrainingRun a(1, TrainingRun::kEightBit);
  a.Make(dir).Save();
  torch::manual_seed(1);
  Net other(48);  // fc1 has 48 outputs
  Checkpoint ckpt(dir, Pg());
  ckpt.Model(*other);
  ExpectError([&] { ckpt.Restore(); }, "was saved from a different model: entry 0 is 'fc1.weight Float [64, 32]' there "
                                       "and 'fc1.weight Float [48, 32]' in this model");
}

TEST(CheckpointTest, MissingRankFileAndManifestAreNamed) {
  const std::string dir = Dir("missing");
  TrainingRun a(1, TrainingRun::kEightBit);
  Checkpoint ckpt = a.Make(dir);
  ExpectError([&] { ckpt.Restore(); }, "no checkpoint in " + dir);
  ckpt.Save();
  Pg()->Barrier()->Wait();
  if (Pg()->Rank() == Pg()->Size() - 1) std::filesystem::remove(ckpt.RankPath(Pg()->Rank(), 1));
  Pg()->Barrier()->Wait();
  if (Pg()->Rank() == Pg()->Size() - 1) {
    ExpectError([&] { ckpt.Restore(); }, "rank file " + ckpt.RankPath(Pg()->Rank(), 1) + " is missing");
  } else {
    ExpectError([&] { ckpt.Restore(); }, "Checkpoint::Restore failed on rank(s) " + std::to_string(Pg()->Size() - 1));
  }
}

// Every truncation length of one file, and 1,000 seeded byte flips spread
// over it, must be refused with an error (never a crash or a silent load).
// Runs on rank 0's file in one process: a world of one reads rank-0 files.
TEST(CheckpointTest, DamagedFilesAreRefused) {
  const std::string dir = Dir("damaged");
  if (Pg()->Rank() != 0) return;
  auto pg = std::make_shared<comm::LocalProcessGroup>();
  torch::manual_seed(3);
  Net net;
  torch::optim::Adam opt(net->parameters());
  int64_t epoch = 4;
  Checkpoint ckpt(dir, pg);
  ckpt.Model(*net).Optimizer("adam", opt).Counter("epoch", &epoch);
  ckpt.Save();
  const std::string path = ckpt.RankPath(0, 1);
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(good.size(), 1000u);
  auto write = [&](const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  auto expect_refused = [&](const std::string& what) {
    try {
      ckpt.Restore();
      ADD_FAILURE() << what << ": restored without an error";
    } catch (const c10::Error& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("corrupted") != std::string::npos ||
                  msg.find("not a lowbit checkpoint") != std::string::npos ||
                  msg.find("has format") != std::string::npos || msg.find("holds rank") != std::string::npos)
          << what << ": " << msg;
    }
  };
  // Every length below the full file, stepping through the header byte by
  // byte and the payload at a stride that still visits thousands of points.
  const size_t stride = std::max<size_t>(1, good.size() / 3000);
  for (size_t len = 0; len < good.size(); len += (len < 64 ? 1 : stride)) {
    write(good.substr(0, len));
    expect_refused("truncated to " + std::to_string(len));
  }
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 1000; ++i) {
    std::string bad = good;
    const size_t pos = i < 48 ? static_cast<size_t>(i) : rng() % bad.size();  // every header byte, then anywhere
    bad[pos] = static_cast<char>(bad[pos] ^ static_cast<char>(1 + rng() % 255));
    write(bad);
    expect_refused("byte " + std::to_string(pos) + " changed");
  }
  write(good + "x");
  expect_refused("one byte appended");
  write(good);
  epoch = 0;
  ckpt.Restore();  // the intact file still loads
  EXPECT_EQ(epoch, 4);
}

TEST(CheckpointTest, DamagedManifestIsNamed) {
  const std::string dir = Dir("manifest");
  if (Pg()->Rank() != 0) return;
  auto pg = std::make_shared<comm::LocalProcessGroup>();
  torch::manual_seed(3);
  Net net;
  Checkpoint ckpt(dir, pg);
  ckpt.Model(*net);
  ckpt.Save();
  for (const auto& [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {"lowbit-checkpoint 1\ngeneration 1\n", "is incomplete"},
           {"lowbit-checkpoint 2\ngeneration 1\nworld_size 1\n", "has format 2"},
           {"lowbit-checkpoint 1\ngeneration x\nworld_size 1\n", "is malformed: line 'generation x'"},
           {"lowbit-checkpoint 1\ngeneration 2\nworld_size 1\n", "rank-0-g2.ckpt is missing"},
           {"lowbit-checkpoint 1\ngeneration 1\nworld_size 1\ncolour 5\n", "unknown key 'colour'"}}) {
    std::ofstream(ckpt.ManifestPath(), std::ios::trunc) << text;
    ExpectError([&] { ckpt.Restore(); }, needle);
  }
}

// A checkpoint saved under qsgd, restored under PowerSGD or the default
// allreduce: every rank warns naming both hooks and leaves the new hook's
// state fresh; with StrictHook, every rank fails.
TEST(CheckpointTest, RestoreUnderAnotherHookWarnsOrFails) {
  const std::string dir = Dir("other_hook");
  TrainingRun a(1, TrainingRun::kEightBit, "qsgd");
  for (int i = 0; i < 3; ++i) a.Step();
  a.Make(dir).Save();
  const std::string qsgd = a.ddp->comm_hook().Config();
  for (const std::string hook : {"powersgd", ""}) {
    TrainingRun b(2, TrainingRun::kEightBit, hook);
    const std::string now = b.ddp->comm_hook().Config();
    const comm::HookState fresh = b.ddp->comm_hook().StateDict();
    ::testing::internal::CaptureStderr();
    b.Make(dir).Restore();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("lowbit: warning: Checkpoint::Restore on rank " + std::to_string(Pg()->Rank()) + ": "),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("was saved with comm hook '" + qsgd + "', this run's hook is '" + now + "'"), std::string::npos)
        << err;
    EXPECT_EQ(b.step, 3);  // the rest is restored
    const comm::HookState state = b.ddp->comm_hook().StateDict();
    ASSERT_EQ(state.size(), fresh.size()) << hook;
    for (size_t i = 0; i < state.size(); ++i) EXPECT_TRUE(torch::equal(state[i].second, fresh[i].second)) << hook;

    TrainingRun strict(2, TrainingRun::kEightBit, hook);
    ExpectError([&] { strict.Make(dir).StrictHook().Restore(); },
                "Checkpoint::Restore on rank " + std::to_string(Pg()->Rank()) + ": " + dir);
    ExpectError([&] { strict.Make(dir).StrictHook().Restore(); },
                "(StrictHook is set: restore under the hook that saved it)");
  }
  // Under the hook that saved it: no warning, and its state comes back.
  TrainingRun c(2, TrainingRun::kEightBit, "qsgd");
  ::testing::internal::CaptureStderr();
  c.Make(dir).StrictHook().Restore();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  const comm::HookState want = a.ddp->comm_hook().StateDict(), got = c.ddp->comm_hook().StateDict();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(torch::equal(want[i].second, got[i].second)) << want[i].first;
}

// Saved by this world, restored by a world of one: the hook state is per
// rank and is dropped (with a warning); the model comes from rank 0's file.
TEST(CheckpointTest, OtherWorldSizeDropsHookState) {
  const std::string dir = Dir("world");
  TrainingRun a(1, TrainingRun::kEightBit);
  for (int i = 0; i < 3; ++i) a.Step();
  a.Make(dir).Save();
  Pg()->Barrier()->Wait();
  if (Pg()->Rank() == 0) {
    auto pg = std::make_shared<comm::LocalProcessGroup>();
    torch::manual_seed(9);
    Net net;
    qat::Prepare(*net, qat::PresetConfig("w4a8"));
    comm::DistributedDataParallel ddp(net.ptr(), pg);
    ddp.RegisterCommHook(compress::MakeCommHook(pg, "qsgd"));
    Checkpoint ckpt(dir, pg);
    int64_t step = 0;
    ckpt.Model(*net).Ddp(ddp).Counter("step", &step);
    ckpt.Restore();
    EXPECT_EQ(step, 3);
    // meta/world_size and meta/step only when the world changed; the
    // residuals too when it did not (the one-process run).
    const size_t hook_entries = ddp.comm_hook().StateDict().size();
    if (Pg()->Size() == 1) {
      EXPECT_GT(hook_entries, 2u);
    } else {
      EXPECT_EQ(hook_entries, 2u);
    }
    for (const auto& p : a.net->named_parameters()) {
      EXPECT_TRUE(torch::equal(p.value(), net->named_parameters()[p.key()])) << p.key();
    }
  }
  Pg()->Barrier()->Wait();
}

}  // namespace
}  // namespace lowbit::train
