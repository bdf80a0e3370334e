// FakeQuantizer, QuantLinear/QuantConv2d, Prepare and Convert: observers
// against their definitions, parameter identity across Prepare, state saved
// with the model, Convert's integer model equal to the fake-quant model bit
// for bit (and after a file round trip), oscillation counting, low-bit
// training gradients, and bad configurations.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <string>

#include "lowbit/qat/convert.h"
#include "lowbit/qat/prepare.h"
#include "tests/common/expect_error.h"
#include "tests/common/small_cnn.h"

namespace lowbit::qat {
namespace {

using lowbit::testing::ExpectError;

namespace nn = torch::nn;

using Net = lowbit::testing::SmallCnn;

at::Tensor Batch(int64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({32, 1, 28, 28});
}

// A few Adam steps on a random classification task.
void Train(Net& net, int steps) {
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  for (int i = 0; i < steps; ++i) {
    at::Tensor x = Batch(100 + i);
    at::Tensor y = torch::randint(0, 10, {32});
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  }
}

void ExpectBitEqual(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_TRUE(torch::equal(a, b)) << "max diff " << (a - b).abs().max().item<float>();
}

TEST(PrepareTest, KeepsParameterIdentityNamesAndTheOptimizerWorking) {
  torch::manual_seed(1);
  Net net;
  std::map<std::string, at::TensorImpl*> before;
  for (const auto& p : net->named_parameters()) before[p.key()] = p.value().unsafeGetTensorImpl();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));  // built before Prepare
  const auto replaced = Prepare(*net, PresetConfig("w8a8"));
  EXPECT_EQ(replaced, (std::vector<std::string>{"conv1", "conv2", "fc1", "fc2"}));
  for (const auto& [name, impl] : before) {
    EXPECT_EQ(net->named_parameters()[name].unsafeGetTensorImpl(), impl) << name;
  }
  EXPECT_NE(dynamic_cast<QuantConv2dImpl*>(net->named_children()["conv1"].get()), nullptr);
  at::Tensor w_before = net->named_parameters()["fc1.weight"].clone();
  opt.zero_grad();
  net->forward(Batch(1)).sum().backward();
  opt.step();
  EXPECT_FALSE(torch::equal(net->named_parameters()["fc1.weight"], w_before));
  try {
    Prepare(*net, PresetConfig("w8a8"));
    ADD_FAILURE() << "prepared twice";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'conv1' is already quantized"), std::string::npos) << e.what();
  }
}

TEST(PrepareTest, FirstLastAndOverrides) {
  Net net;
  QatConfig c = PresetConfig("w4a4_lsq");
  c.overrides.push_back({"fc*", std::nullopt});
  EXPECT_EQ(Prepare(*net, c), (std::vector<std::string>{"conv1", "conv2"}));
  auto* conv1 = dynamic_cast<QuantConv2dImpl*>(net->named_children()["conv1"].get());
  auto* conv2 = dynamic_cast<QuantConv2dImpl*>(net->named_children()["conv2"].get());
  ASSERT_TRUE(conv1 && conv2);
  EXPECT_EQ(conv1->weight_quantizer->config().bits, 8);  // the first layer stays at 8 bits
  EXPECT_EQ(conv2->weight_quantizer->config().bits, 4);
  EXPECT_EQ(conv2->weight_quantizer->config().estimator, Estimator::kLsq);
  EXPECT_NE(dynamic_cast<nn::LinearImpl*>(net->named_children()["fc1"].get()), nullptr);
  EXPECT_THROW(PresetConfig("w3a3"), c10::Error);
}

TEST(PrepareTest, W8A8IsCloseToFp32) {
  torch::manual_seed(2);
  Net a, b;
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < a->parameters().size(); ++i) b->parameters()[i].copy_(a->parameters()[i]);
  }
  Prepare(*b, PresetConfig("w8a8"));
  at::Tensor x = Batch(3);
  at::Tensor ya = a->forward(x), yb = b->forward(x);
  EXPECT_LT(((ya - yb).norm() / ya.norm()).item<double>(), 0.03);
  EXPECT_GT(((ya - yb).norm() / ya.norm()).item<double>(), 0.0);  // it does quantize
  ya.pow(2).sum().backward();
  yb.pow(2).sum().backward();
  for (const auto& p : b->named_parameters()) {
    const at::Tensor ga = a->named_parameters()[p.key()].grad();
    EXPECT_LT(((p.value().grad() - ga).norm() / ga.norm()).item<double>(), 0.15) << p.key();
  }
}

TEST(FakeQuantizerTest, ObserversFollowTheirDefinitions) {
  torch::manual_seed(3);
  at::Tensor w = torch::randn({4, 30});
  {  // min-max, symmetric int8 per row: amax / 127.5.
    QuantizerConfig c;
    c.granularity = Granularity::kPerChannel;
    FakeQuantizer q(c, 4, true);
    at::Tensor y = q->forward(w);
    at::Tensor s = std::get<0>(w.abs().max(1)) / 127.5;
    EXPECT_TRUE(torch::allclose(q->Grid().scale, s));
    EXPECT_TRUE(torch::equal(y, at::fake_quantize_per_channel_affine(w, s, torch::zeros({4}, torch::kInt), 0, -128, 127)));
  }
  {  // affine uint8 per tensor: scale and zero point as torch's observers.
    QuantizerConfig c;
    c.symmetric = false;
    FakeQuantizer q(c, 1, false);
    at::Tensor x = torch::rand({100}) * 5 - 1;
    q->forward(x);
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    const double s = (hi - lo) / 255;
    EXPECT_NEAR(q->Grid().scale.item<double>(), s, 1e-6);
    EXPECT_EQ(q->Grid().zero_point.item<float>(), std::nearbyint(-lo / s));
  }
  {  // moving average: r += c (batch - r); in eval the stored range is used.
    QuantizerConfig c;
    c.observer = Observer::kMovingAverageMinMax;
    c.averaging_constant = 0.25;
    FakeQuantizer q(c, 1, false);
    q->forward(torch::tensor({-1.0f, 2.0f}));
    q->forward(torch::tensor({-3.0f, 6.0f}));
    // max 2 + 0.25 (6 - 2) = 3, min -1 + 0.25 (-3 + 1) = -1.5: amax 3.
    EXPECT_NEAR(q->Grid().scale.item<double>(), 3.0 / 127.5, 1e-6);
    q->eval();
    q->forward(torch::tensor({-100.0f, 100.0f}));
    EXPECT_NEAR(q->Grid().scale.item<double>(), 3.0 / 127.5, 1e-6);
  }
  {  // MSE: never worse than min-max, and better on heavy tails.
    at::Tensor x = torch::randn({4000});
    x[0] = 40;
    QuantizerConfig c;
    c.bits = 4;
    FakeQuantizer minmax(c, 1, true);
    c.observer = Observer::kMse;
    FakeQuantizer mse(c, 1, true);
    const double e_minmax = (minmax->forward(x.view({1, -1})) - x).pow(2).sum().item<double>();
    const double e_mse = (mse->forward(x.view({1, -1})) - x).pow(2).sum().item<double>();
    EXPECT_LT(e_mse, 0.5 * e_minmax);
    EXPECT_LT(mse->Grid().scale.item<double>(), minmax->Grid().scale.item<double>());
  }
  {  // percentile of |x|.
    QuantizerConfig c;
    c.observer = Observer::kPercentile;
    c.percentile = 90;
    FakeQuantizer q(c, 1, true);
    at::Tensor x = torch::arange(1, 101, torch::kFloat).view({1, -1});
    q->forward(x);
    EXPECT_NEAR(q->Grid().scale.item<double>(), 90 / 127.5, 1e-6);
  }
  {  // binary: {-s, s} with s = mean |x| (XNOR-Net).
    QuantizerConfig c;
    c.format = Format::kBinary;
    c.bits = 1;
    FakeQuantizer q(c, 1, true);
    at::Tensor x = torch::tensor({{-2.0f, 0.5f, 1.5f, -0.1f}});
    at::Tensor y = q->forward(x);
    EXPECT_TRUE(torch::allclose(y, torch::tensor({{-1.025f, 1.025f, 1.025f, -1.025f}})));
  }
  {  // fp4 e2m1 per tensor: scale = amax / 6.
    QuantizerConfig c;
    c.format = Format::kFp4E2M1;
    FakeQuantizer q(c, 1, true);
    at::Tensor y = q->forward(torch::tensor({{12.0f, 5.0f, -0.3f}}));
    EXPECT_TRUE(torch::equal(y, torch::tensor({{12.0f, 4.0f, -0.0f}})));
  }
}

TEST(FakeQuantizerTest, LsqInitialisesFromDataAndLearnsTheStep) {
  torch::manual_seed(4);
  QuantizerConfig c;
  c.bits = 4;
  c.estimator = Estimator::kLsq;
  FakeQuantizer q(c, 1, true);
  at::Tensor w = torch::randn({8, 16});
  q->forward(w);
  EXPECT_NEAR(q->Grid().scale.item<double>(), 2 * w.abs().mean().item<double>() / std::sqrt(7.0), 1e-6);
  ASSERT_EQ(q->parameters().size(), 1u);  // log s
  q->forward(w).pow(2).sum().backward();
  EXPECT_NE(q->parameters()[0].grad().item<float>(), 0.0f);
}

TEST(FakeQuantizerTest, StateIsSavedWithTheModel) {
  const std::string path = ::testing::TempDir() + "qat_state.pt";
  for (const std::string preset : {"w4a4_lsq", "w8a8"}) {
    torch::manual_seed(5);
    Net a;
    Prepare(*a, PresetConfig(preset));
    Train(a, 5);
    a->eval();
    const at::Tensor want = a->forward(Batch(9));
    torch::save(a, path);
    torch::manual_seed(6);
    Net b;
    Prepare(*b, PresetConfig(preset));
    torch::load(b, path);
    b->eval();
    ExpectBitEqual(b->forward(Batch(9)), want);
  }
  std::remove(path.c_str());
}

TEST(FakeQuantizerTest, CountsWeightLevelFlips) {
  QuantizerConfig c;
  c.bits = 4;
  c.estimator = Estimator::kLsq;
  FakeQuantizer q(c, 1, true);
  at::Tensor w = torch::linspace(-1, 1, 100).view({1, -1});
  q->forward(w);
  EXPECT_EQ(q->LastFlipFraction(), -1.0);
  const float s = q->Grid().scale.item<float>();
  at::Tensor moved = w.clone();
  moved.narrow(1, 0, 10).add_(s);  // 10 weights move by one level
  q->forward(moved);
  EXPECT_NEAR(q->LastFlipFraction(), 0.10, 0.011);
  q->forward(moved);
  EXPECT_EQ(q->LastFlipFraction(), 0.0);
}

TEST(LowBitTrainingTest, ForwardOperandsAreInt8AndWeightGradientIsUnbiased) {
  torch::manual_seed(7);
  nn::Linear fp(16, 8);
  nn::Linear src(16, 8);
  {
    torch::NoGradGuard no_grad;
    src->weight.copy_(fp->weight);
    src->bias.copy_(fp->bias);
  }
  QuantLinear q(src, PresetConfig("int8_train").layers);
  at::Tensor x = torch::randn({64, 16});
  at::Tensor dy = torch::randn({64, 8});
  // Forward: equal to the float layer on the int8-rounded operands.
  const at::Tensor w = src->weight.detach();
  const at::Tensor wq = at::fake_quantize_per_channel_affine(
      w, std::get<0>(w.abs().max(1)) / 127.5, torch::zeros({8}, torch::kInt), 0, -128, 127);
  const at::Tensor xq = at::fake_quantize_per_tensor_affine(x, x.abs().max().item<double>() / 127.5, 0, -128, 127);
  const at::Tensor y = q->forward(x);
  EXPECT_TRUE(torch::allclose(y, torch::nn::functional::linear(xq, wq, src->bias), 1e-5, 1e-5));
  // Backward: over many steps the quantized gradient averages to the exact one.
  at::Tensor exact = dy.t().matmul(xq);
  at::Tensor sum = torch::zeros_like(exact);
  const int draws = 300;
  for (int i = 0; i < draws; ++i) {
    src->weight.mutable_grad().reset();
    q->forward(x).backward(dy);
    sum += src->weight.grad();
    if (i == 0) EXPECT_FALSE(torch::allclose(src->weight.grad(), exact, 0, 1e-6));
  }
  EXPECT_TRUE(torch::allclose(sum / draws, exact, 0, 0.03 * exact.abs().max().item<double>()));
}

class ConvertTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvertTest, IntegerModelEqualsFakeQuantModelAndSurvivesAFile) {
  const std::string preset = GetParam();
  torch::manual_seed(8);
  Net net;
  Prepare(*net, PresetConfig(preset));
  Train(net, 4);
  net->eval();
  const at::Tensor x = Batch(10);
  const at::Tensor want = net->forward(x);
  const auto converted = Convert(*net);
  EXPECT_EQ(converted.size(), 4u);
  for (const auto& name : converted) {
    auto* layer = dynamic_cast<QuantizedLayerBase*>(net->named_children()[name].get());
    ASSERT_NE(layer, nullptr) << name;
    const auto dtype = layer->weight_codes.scalar_type();
    EXPECT_TRUE(dtype == torch::kChar || dtype == torch::kByte) << name;
    const int64_t qmin = layer->weight_grid[0].item<int64_t>(), qmax = layer->weight_grid[1].item<int64_t>();
    EXPECT_GE(layer->weight_codes.min().item<int64_t>(), qmin);
    EXPECT_LE(layer->weight_codes.max().item<int64_t>(), qmax);
  }
  ExpectBitEqual(net->forward(x), want);
  const std::string path = ::testing::TempDir() + "converted_" + preset + ".lbq";
  SaveQuantized(*net, path);
  torch::manual_seed(99);
  Net fresh;
  Prepare(*fresh, PresetConfig(preset));
  Convert(*fresh);
  LoadQuantized(*fresh, path);
  ExpectBitEqual(fresh->forward(x), want);
  // A model converted differently is refused, naming the tensor.
  Net other;
  Prepare(*other, PresetConfig(preset == "w4a4_lsq" ? "w8a8" : "w4a4_lsq"));
  Convert(*other);
  EXPECT_THROW(LoadQuantized(*other, path), c10::Error);
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Presets, ConvertTest,
                         ::testing::Values("w8a8", "w4a8", "w4a4_lsq", "w4a4_quest", "w2a2_quest", "w1a1_quest"));

TEST(ConvertTest, TernaryAffineAndPerGroupWeights) {
  for (int variant = 0; variant < 3; ++variant) {
    torch::manual_seed(11);
    Net net;
    QatConfig c;
    QuantizerConfig w;
    if (variant == 0) {
      w.format = Format::kTernary;
      w.observer = Observer::kMse;
    } else if (variant == 1) {
      w.symmetric = false;
      w.bits = 6;
      w.granularity = Granularity::kPerChannel;
    } else {
      w.bits = 3;
      w.granularity = Granularity::kPerGroup;
      w.group_size = 8;
      w.estimator = Estimator::kLsqPlus;
    }
    c.layers.weight = w;
    if (variant == 2) c.overrides.push_back({"conv1", std::nullopt});  // fan-in 9
    Prepare(*net, c);
    Train(net, 2);
    net->eval();
    const at::Tensor want = net->forward(Batch(12));
    Convert(*net);
    SCOPED_TRACE(ToString(w));
    ExpectBitEqual(net->forward(Batch(12)), want);
  }
}

TEST(ConvertTest, RefusesMiniFloatWeights) {
  Net net;
  Prepare(*net, PresetConfig("fp8_train"));
  try {
    Convert(*net);
    ADD_FAILURE();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'conv1' has fp8_e4m3"), std::string::npos) << e.what();
  }
}

TEST(BadConfigTest, ErrorsNameTheFieldAndValue) {
  QuantizerConfig c;
  c.bits = 9;
  ExpectError([&] { FakeQuantizer(c, 1, true); }, "bits must be in [1, 8], got 9");
  c.bits = 0;
  ExpectError([&] { FakeQuantizer(c, 1, true); }, "bits must be in [1, 8], got 0");
  c = {};
  c.granularity = Granularity::kPerGroup;
  c.group_size = 7;
  ExpectError([&] { QuantLinear(nn::Linear(16, 4), LayerConfig{c, std::nullopt, {}}); },
               "group_size must divide the fan-in (16), got 7");
  c = {};
  c.format = Format::kFp8E4M3;
  c.estimator = Estimator::kLsq;
  ExpectError([&] { FakeQuantizer(c, 1, true); }, "lsq needs an int or ternary format, got fp8_e4m3");
  c = {};
  c.estimator = Estimator::kPact;
  c.granularity = Granularity::kPerChannel;
  ExpectError([&] { FakeQuantizer(c, 4, false); }, "pact quantizes activations on one unsigned int grid");
  Net net;
  QatConfig bad;
  QuantizerConfig g;
  g.granularity = Granularity::kPerGroup;
  g.group_size = 5;
  bad.layers.weight = g;
  ExpectError([&] { Prepare(*net, bad); }, "layer 'conv1'");
}

}  // namespace
}  // namespace lowbit::qat
