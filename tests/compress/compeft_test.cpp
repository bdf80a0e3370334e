// ComPEFT against its rule written out (top-k of |tau|, then alpha * std(tau)
// * sign), the task-vector file's round trip on a model, and files that are
// cut short or changed: an error naming what is wrong, and the model as it was.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/compress/compeft.h"
#include "lowbit/kernels/archive_file.h"
#include "lowbit/compress/registry.h"
#include "lowbit/comm/local_process_group.h"
#include "tests/common/expect_error.h"

namespace lowbit::compress {
namespace {

using lowbit::testing::ExpectError;

at::Tensor Reference(const at::Tensor& tau, double density, double alpha) {
  const int64_t n = tau.numel(), k = static_cast<int64_t>(std::ceil(density * n));
  const at::Tensor flat = tau.reshape({-1});
  const at::Tensor idx = std::get<1>(flat.abs().topk(k));
  at::Tensor out = torch::zeros({n});
  const double scale = alpha * flat.std(/*unbiased=*/false).item<double>();
  out.index_put_({idx}, flat.index({idx}).sign() * scale);
  return out.view(tau.sizes());
}

TEST(ComPeft, TopKThenTernaryWithAlphaTimesStd) {
  torch::manual_seed(0);
  for (double density : {0.01, 0.05, 0.1, 1.0}) {
    for (double alpha : {0.5, 2.0}) {
      const at::Tensor tau = torch::randn({37, 53});
      const at::Tensor payload = EncodeSparseTernary(tau, {density, alpha});
      at::Tensor out = torch::empty({tau.numel()});
      DecodeSparseTernary(payload, out, false);
      EXPECT_TRUE(torch::allclose(out.view(tau.sizes()), Reference(tau, density, alpha), 0, 1e-6)) << density;
      const int64_t k = static_cast<int64_t>(std::ceil(density * tau.numel()));
      // Header, at most one varint byte per gap below 128, one sign bit each.
      EXPECT_LE(payload.numel(), 20 + 2 * k + (k + 7) / 8) << density;
      if (density < 0.1) EXPECT_LE(payload.numel(), 20 + k + (k + 7) / 8 + k / 4) << "gaps mostly fit one byte";
    }
  }
}

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(20, 30));
    fc2 = register_module("fc2", torch::nn::Linear(30, 5));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

std::string TempPath(const char* name) { return ::testing::TempDir() + name; }

TEST(ComPeft, TaskVectorFileRoundTrips) {
  torch::manual_seed(1);
  Net base, tuned;
  torch::NoGradGuard no_grad;
  for (auto& p : tuned.named_parameters())
    p.value().copy_(base.named_parameters()[p.key()] + 0.01 * torch::randn(p.value().sizes()));
  const std::string path = TempPath("delta.lbtv");
  const ComPeftOptions o{0.1, 1.0};
  const int64_t bytes = SaveTaskVector(tuned, base, o, path);
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  EXPECT_EQ(static_cast<int64_t>(f.tellg()), bytes);
  Net applied;
  for (auto& p : applied.named_parameters()) p.value().copy_(base.named_parameters()[p.key()]);
  ApplyTaskVector(applied, path);
  for (auto& p : applied.named_parameters()) {
    const at::Tensor want = base.named_parameters()[p.key()] +
                            Reference(tuned.named_parameters()[p.key()] - base.named_parameters()[p.key()], 0.1, 1.0);
    EXPECT_TRUE(torch::allclose(p.value(), want, 0, 1e-6)) << p.key();
  }
}

TEST(ComPeft, DamagedFilesAreRefusedAndChangeNothing) {
  torch::manual_seed(2);
  Net base, tuned;
  const std::string path = TempPath("delta2.lbtv");
  SaveTaskVector(tuned, base, {0.05, 1.0}, path);
  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; };
  Net target;
  const at::Tensor before = target.fc1->weight.detach().clone();
  write(good.substr(0, good.size() - 3));
  ExpectError([&] { ApplyTaskVector(target, path); }, "cut short");
  std::string bad = good;
  bad[0] = 'X';
  write(bad);
  ExpectError([&] { ApplyTaskVector(target, path); }, "no 'LBTV' magic");
  // Files whose CRC-32 is right but whose contents are not (made by hand):
  // the structure is checked as well.
  auto signed_bytes = [](std::string body) {
    const uint32_t crc = kernels::Crc32(body.data(), body.size());
    body.append(reinterpret_cast<const char*>(&crc), 4);
    return body;
  };
  const std::string body = good.substr(0, good.size() - 4);
  write(body + "extra");
  ExpectError([&] { ApplyTaskVector(target, path); }, "its CRC-32 does not match its bytes");
  write(signed_bytes(body + "extra"));
  ExpectError([&] { ApplyTaskVector(target, path); }, "bytes left over");
  // The first tensor's element count (after magic, version, count, name, dims, length).
  bad = good;
  const size_t at = 4 + 4 + 4 + 4 + std::string("fc1.weight").size() + 4 + 16 + 8;
  bad[at] = static_cast<char>(bad[at] + 1);
  write(signed_bytes(bad.substr(0, bad.size() - 4)));
  ExpectError([&] { ApplyTaskVector(target, path); }, "'fc1.weight': ComPEFT payload: it holds 601 elements");
  struct Other : torch::nn::Module {
    Other() { register_module("fc1", torch::nn::Linear(20, 31)); }
  } other;
  write(good);
  ExpectError([&] { ApplyTaskVector(other, path); }, "holds 4 tensors, the model has 2");
  EXPECT_TRUE(torch::equal(target.fc1->weight, before));
  ExpectError([&] { EncodeSparseTernary(torch::ones({4}), {0.0, 1.0}); }, "density must be in (0, 1], got 0");
  ExpectError([&] { EncodeSparseTernary(torch::ones({4}), {0.5, -1.0}); }, "alpha must be > 0, got -1");
  ExpectError(
      [&] {
        MakeCommHook(std::make_shared<comm::LocalProcessGroup>(), "compeft", {{"density", "2"}});
      },
      "density");
}

}  // namespace
}  // namespace lowbit::compress
