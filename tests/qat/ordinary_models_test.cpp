// Prepare on models written the ordinary LibTorch way: a Sequential, typed
// lowbit::qat::Linear members called as fc1(x), a ModuleList and a
// ModuleDict. Each, prepared with w4a4_lsq and w2a2_quest, must differ from
// its fp32 output and equal, bit for bit, the same layers driven through
// ForwardLayer (the first stage's path, tested against ATen's fake
// quantizers in modules_test). Typed torch::nn::Linear members, which
// Prepare cannot reach, must make Calibrate and the first backward throw,
// naming every such layer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "lowbit/qat/convert.h"
#include "lowbit/qat/prepare.h"
#include "tests/common/expect_error.h"

namespace lowbit::qat {
namespace {

using lowbit::testing::ExpectError;
namespace nn = torch::nn;

constexpr int64_t kIn = 64, kHidden = 48, kOut = 10;

// The reference: three torch Linear layers called through ForwardLayer.
struct ReferenceImpl : nn::Module {
  ReferenceImpl() {
    register_module("l0", nn::Linear(kIn, kHidden));
    register_module("l1", nn::Linear(kHidden, kHidden));
    register_module("l2", nn::Linear(kHidden, kOut));
  }
  at::Tensor forward(at::Tensor x) {
    auto c = named_children();
    x = torch::relu(ForwardLayer(*c["l0"], x));
    x = torch::relu(ForwardLayer(*c["l1"], x));
    return ForwardLayer(*c["l2"], x);
  }
};
TORCH_MODULE(Reference);

nn::Sequential MakeSequential() {
  return nn::Sequential(nn::Linear(kIn, kHidden), nn::ReLU(), nn::Linear(kHidden, kHidden), nn::ReLU(),
                        nn::Linear(kHidden, kOut));
}

// Typed members, called as members: lowbit::qat::Linear keeps fc1(x).
struct TypedImpl : nn::Module {
  TypedImpl() {
    fc1 = register_module("fc1", Linear(kIn, kHidden));
    fc2 = register_module("fc2", Linear(kHidden, kHidden));
    fc3 = register_module("fc3", Linear(kHidden, kOut));
  }
  at::Tensor forward(at::Tensor x) { return fc3(torch::relu(fc2->forward(torch::relu(fc1(x))))); }
  Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
TORCH_MODULE(Typed);

// A ModuleList of torch Linear layers, walked in order.
struct ListImpl : nn::Module {
  ListImpl() {
    layers = register_module("layers", nn::ModuleList(nn::Linear(kIn, kHidden), nn::Linear(kHidden, kHidden),
                                                      nn::Linear(kHidden, kOut)));
  }
  at::Tensor forward(at::Tensor x) {
    for (size_t i = 0; i < layers->size(); ++i) {
      x = ForwardLayer(*layers[i], x);
      if (i + 1 < layers->size()) x = torch::relu(x);
    }
    return x;
  }
  nn::ModuleList layers{nullptr};
};
TORCH_MODULE(List);

// A ModuleList of lowbit::qat::Linear, called through as<>() as LibTorch's
// own examples do.
struct QatListImpl : nn::Module {
  QatListImpl() {
    layers = register_module("layers", nn::ModuleList(Linear(kIn, kHidden), Linear(kHidden, kHidden),
                                                      Linear(kHidden, kOut)));
  }
  at::Tensor forward(at::Tensor x) {
    for (size_t i = 0; i < layers->size(); ++i) {
      x = layers[i]->as<Linear>()->forward(x);
      if (i + 1 < layers->size()) x = torch::relu(x);
    }
    return x;
  }
  nn::ModuleList layers{nullptr};
};
TORCH_MODULE(QatList);

struct DictImpl : nn::Module {
  DictImpl() {
    layers = register_module(
        "layers", nn::ModuleDict(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
                      {"in", nn::Linear(kIn, kHidden).ptr()},
                      {"mid", nn::Linear(kHidden, kHidden).ptr()},
                      {"out", nn::Linear(kHidden, kOut).ptr()}}));
  }
  at::Tensor forward(at::Tensor x) {
    x = torch::relu(ForwardLayer(*layers["in"], x));
    x = torch::relu(ForwardLayer(*layers["mid"], x));
    return ForwardLayer(*layers["out"], x);
  }
  nn::ModuleDict layers{nullptr};
};
TORCH_MODULE(Dict);

// Typed torch::nn::Linear members: what Prepare cannot reach.
struct PlainTypedImpl : nn::Module {
  PlainTypedImpl() {
    fc1 = register_module("fc1", nn::Linear(kIn, kHidden));
    fc2 = register_module("fc2", nn::Linear(kHidden, kHidden));
    fc3 = register_module("fc3", nn::Linear(kHidden, kOut));
  }
  at::Tensor forward(at::Tensor x) { return fc3(torch::relu(fc2(torch::relu(fc1(x))))); }
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
TORCH_MODULE(PlainTyped);

// Copies `from`'s parameters into `to` in registration order (both have the
// same three layers).
void CopyParameters(nn::Module& from, nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto a = from.parameters(), b = to.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

void ExpectBitEqual(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::equal(a, b)) << what << ": max diff " << (a - b).abs().max().item<float>();
}

// Prepares `model` and a Reference with the same weights, calibrates both on
// one batch, and compares outputs and weight gradients of a training step.
template <typename Model>
void CheckAgainstReference(const std::string& preset, std::function<Model()> make) {
  SCOPED_TRACE(preset);
  torch::manual_seed(7);
  Model model = make();
  Reference reference;
  CopyParameters(*model, *reference);
  const at::Tensor calibration = torch::randn({64, kIn});
  const at::Tensor x = torch::randn({16, kIn});
  const at::Tensor fp32 = model->forward(x).detach();

  const std::vector<std::string> prepared = Prepare(*model, PresetConfig(preset));
  ASSERT_EQ(prepared.size(), 3u);
  Prepare(*reference, PresetConfig(preset));
  Calibrate(*model, [&] { model->forward(calibration); });
  Calibrate(*reference, [&] { reference->forward(calibration); });

  const at::Tensor y = model->forward(x), y_ref = reference->forward(x);
  EXPECT_GT((y - fp32).abs().max().item<float>(), 1e-4f) << "the prepared model computes in fp32";
  ExpectBitEqual(y, y_ref, "output");
  y.pow(2).sum().backward();
  y_ref.pow(2).sum().backward();
  auto p = model->parameters(), q = reference->parameters();
  for (size_t i = 0; i < 6; ++i) {  // the three weights and biases, in order
    ExpectBitEqual(p[i].grad(), q[i].grad(), "gradient " + std::to_string(i));
  }
}

TEST(OrdinaryModelsTest, SequentialIsQuantized) {
  for (const char* preset : {"w4a4_lsq", "w2a2_quest"}) CheckAgainstReference<nn::Sequential>(preset, MakeSequential);
}

TEST(OrdinaryModelsTest, TypedQatMembersAreQuantized) {
  for (const char* preset : {"w4a4_lsq", "w2a2_quest"}) {
    CheckAgainstReference<Typed>(preset, [] { return Typed(); });
  }
}

TEST(OrdinaryModelsTest, ModuleListIsQuantized) {
  for (const char* preset : {"w4a4_lsq", "w2a2_quest"}) {
    CheckAgainstReference<List>(preset, [] { return List(); });
    CheckAgainstReference<QatList>(preset, [] { return QatList(); });
  }
}

TEST(OrdinaryModelsTest, ModuleDictIsQuantized) {
  for (const char* preset : {"w4a4_lsq", "w2a2_quest"}) {
    CheckAgainstReference<Dict>(preset, [] { return Dict(); });
  }
}

// Convert reaches a Sequential's layers the same way: the integer model's
// output equals the fake-quant model's, bit for bit.
TEST(OrdinaryModelsTest, ConvertReachesSequentialLayers) {
  torch::manual_seed(8);
  nn::Sequential model = MakeSequential();
  Prepare(*model, PresetConfig("w4a4_lsq"));
  Calibrate(*model, [&] { model->forward(torch::randn({64, kIn})); });
  model->eval();
  const at::Tensor x = torch::randn({16, kIn});
  const at::Tensor fake = model->forward(x);
  EXPECT_EQ(Convert(*model), (std::vector<std::string>{"0", "2", "4"}));
  for (size_t i : {0, 2, 4}) {
    EXPECT_NE(model->ptr(i)->as<QuantizedLinearImpl>(), nullptr) << "Sequential entry " << i << " not converted";
  }
  ExpectBitEqual(model->forward(x), fake, "converted output");
}

TEST(OrdinaryModelsTest, UnpreparedQatLinearIsTorchLinear) {
  torch::manual_seed(3);
  nn::Linear plain(kIn, kOut);
  torch::manual_seed(3);
  Linear ours(kIn, kOut);
  ExpectBitEqual(plain->weight, ours->weight, "initial weight");
  ExpectBitEqual(plain->bias, ours->bias, "initial bias");
  const at::Tensor x = torch::randn({5, kIn});
  ExpectBitEqual(plain(x), ours(x), "output");
  EXPECT_FALSE(ours->configured());
}

TEST(OrdinaryModelsTest, UnreachableTypedMembersFailCalibration) {
  torch::manual_seed(4);
  PlainTyped model;
  Prepare(*model, PresetConfig("w4a4_lsq"));
  ExpectError([&] { Calibrate(*model, [&] { model->forward(torch::randn({8, kIn})); }); },
              "prepared layer(s) fc1, fc2, fc3 were not called");
  EXPECT_EQ(UnreachedLayers(*model), (std::vector<std::string>{"fc1", "fc2", "fc3"}));
}

TEST(OrdinaryModelsTest, UnreachableTypedMembersFailTheFirstBackward) {
  torch::manual_seed(5);
  PlainTyped model;
  QatConfig c = PresetConfig("w2a2_quest");
  c.overrides.push_back({"fc3", std::nullopt});  // left fp32: not a prepared layer
  Prepare(*model, c);
  at::Tensor loss = model->forward(torch::randn({8, kIn})).sum();
  ExpectError([&] { loss.backward(); }, "prepared layer(s) fc1, fc2 were never called");
}

TEST(OrdinaryModelsTest, TorchLinearCalledThroughAsIsCaught) {
  // as<torch::nn::Linear>() still finds the replacement (it is a
  // torch::nn::Linear), but calls torch's forward: caught, not silent.
  struct AsImpl : nn::Module {
    AsImpl() { layers = register_module("layers", nn::ModuleList(nn::Linear(kIn, kOut))); }
    at::Tensor forward(at::Tensor x) { return layers[0]->as<nn::Linear>()->forward(x); }
    nn::ModuleList layers{nullptr};
  };
  auto model = std::make_shared<AsImpl>();
  QatConfig c = PresetConfig("w8a8");
  Prepare(*model, c);
  ExpectError([&] { Calibrate(*model, [&] { model->forward(torch::randn({4, kIn})); }); },
              "prepared layer(s) layers.0 were not called");
}

}  // namespace
}  // namespace lowbit::qat
