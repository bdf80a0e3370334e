// The estimators against independent references: ATen's fake_quantize ops
// (forward, and for LSQ the gradients of _fake_quantize_learnable_*), the
// analytic PACT and QuEST gradients written with tensor ops and an explicit
// Hadamard matrix, QuEST's clip table recomputed by integration, and the
// statistics of the stochastic gradient rounding.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lowbit/qat/estimators.h"

namespace lowbit::qat {
namespace {

using kernels::ScaleLayout;

TEST(EstimatorsTest, SteForwardIsATenAndGradientIsIdentityOrATensMask) {
  torch::manual_seed(1);
  at::Tensor x = (torch::randn({300}) * 2).requires_grad_();
  at::Tensor dy = torch::randn({300});
  const at::Tensor s = torch::tensor({0.05f}), zp = torch::tensor({3.0f});
  at::Tensor want = at::fake_quantize_per_tensor_affine(x, 0.05, 3, -8, 7);
  at::Tensor y = FakeQuantSte(x, s, zp, {}, -8, 7, {}, /*clipped=*/false);
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  y.backward(dy);
  EXPECT_TRUE(torch::equal(x.grad(), dy));
  // Clipped STE: ATen's own fake_quantize backward.
  x.mutable_grad().reset();
  want.backward(dy);
  at::Tensor want_grad = x.grad().clone();
  x.mutable_grad().reset();
  FakeQuantSte(x, s, zp, {}, -8, 7, {}, /*clipped=*/true).backward(dy);
  EXPECT_TRUE(torch::equal(x.grad(), want_grad));
}

TEST(EstimatorsTest, LsqGradientsEqualATensLearnableFakeQuantize) {
  torch::manual_seed(2);
  for (auto [qmin, qmax] : {std::pair<int64_t, int64_t>{-8, 7}, {0, 15}, {-128, 127}, {-2, 1}}) {
    at::Tensor x = (torch::randn({4096}) * 0.7).requires_grad_();
    at::Tensor dy = torch::randn({4096});
    const double factor = 1.0 / std::sqrt(4096.0 * qmax);
    at::Tensor s_ref = torch::tensor({0.09f}).requires_grad_();
    at::Tensor zp_ref = torch::tensor({0.0f}).requires_grad_();
    at::Tensor want = at::_fake_quantize_learnable_per_tensor_affine(x, s_ref, zp_ref, qmin, qmax, factor);
    want.backward(dy);
    const at::Tensor want_dx = x.grad().clone();
    x.mutable_grad().reset();
    at::Tensor s = torch::tensor({0.09f}).requires_grad_();
    at::Tensor y = FakeQuantLsq(x, s, {}, qmin, qmax, {}, factor);
    EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
    y.backward(dy);
    SCOPED_TRACE(::testing::Message() << "[" << qmin << ", " << qmax << "]");
    EXPECT_TRUE(torch::equal(x.grad(), want_dx));
    EXPECT_NEAR(s.grad().item<double>(), s_ref.grad().item<double>(),
                1e-6 * std::max(1.0, std::fabs(s_ref.grad().item<double>())));
  }
}

TEST(EstimatorsTest, LsqPerChannelGradientsEqualATen) {
  torch::manual_seed(3);
  at::Tensor x = (torch::randn({6, 50})).requires_grad_();
  at::Tensor dy = torch::randn({6, 50});
  at::Tensor s_ref = (torch::rand({6}) * 0.2 + 0.05).requires_grad_();
  at::Tensor zp_ref = torch::zeros({6}).requires_grad_();
  at::Tensor want = at::_fake_quantize_learnable_per_channel_affine(x, s_ref, zp_ref, 0, -8, 7, 0.5);
  want.backward(dy);
  at::Tensor s = s_ref.detach().clone().requires_grad_();
  at::Tensor xx = x.detach().clone().requires_grad_();
  at::Tensor y = FakeQuantLsq(xx, s, {}, -8, 7, {ScaleLayout::kPerChannel, 0, 0}, 0.5);
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  y.backward(dy);
  EXPECT_TRUE(torch::equal(xx.grad(), x.grad()));
  EXPECT_TRUE(torch::allclose(s.grad(), s_ref.grad(), 1e-6, 1e-6)) << s.grad() << s_ref.grad();
}

TEST(EstimatorsTest, LsqPlusOffsetGradientIsTheClippedGradientSum) {
  torch::manual_seed(4);
  at::Tensor x = torch::randn({1000}).requires_grad_();
  at::Tensor dy = torch::randn({1000});
  at::Tensor s = torch::tensor({0.1f}).requires_grad_();
  at::Tensor b = torch::tensor({0.3f}).requires_grad_();
  at::Tensor y = FakeQuantLsq(x, s, b, -8, 7, {}, 1.0);
  at::Tensor v = (x.detach() - 0.3f) * (1.0f / 0.1f);
  at::Tensor q = torch::round(v);
  at::Tensor inside = q.ge(-8) & q.le(7);
  EXPECT_TRUE(torch::allclose(y.detach(), torch::clamp(q, -8, 7) * 0.1f + 0.3f, 1e-6, 1e-6));
  y.backward(dy);
  EXPECT_TRUE(torch::equal(x.grad(), dy * inside));
  EXPECT_NEAR(b.grad().item<double>(), (dy * ~inside).sum().item<double>(), 1e-4);
  at::Tensor term = torch::where(inside, q - v, torch::where(q.lt(-8), torch::full_like(v, -8), torch::full_like(v, 7)));
  EXPECT_NEAR(s.grad().item<double>(), (dy * term).sum().item<double>(), 1e-3);
}

TEST(EstimatorsTest, PactForwardAndGradientsAreTheDefinition) {
  torch::manual_seed(5);
  at::Tensor x = (torch::randn({2000}) * 3).requires_grad_();
  at::Tensor dy = torch::randn({2000});
  at::Tensor alpha = torch::tensor({2.5f}).requires_grad_();
  at::Tensor y = FakeQuantPact(x, alpha, 4);
  const float step = 2.5f / 15;
  at::Tensor clipped = torch::clamp(x.detach(), 0, 2.5);
  EXPECT_TRUE(torch::allclose(y.detach(), torch::round(clipped * (1.0f / step)) * step, 1e-6, 1e-6));
  y.backward(dy);
  at::Tensor xd = x.detach();
  EXPECT_TRUE(torch::equal(x.grad(), dy * (xd.ge(0) & xd.le(2.5))));
  EXPECT_NEAR(alpha.grad().item<double>(), (dy * xd.ge(2.5)).sum().item<double>(), 1e-4);
}

at::Tensor Hadamard(int64_t n) {
  at::Tensor h = torch::ones({1, 1}, torch::kDouble);
  while (h.size(0) < n) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  return h / std::sqrt(static_cast<double>(n));
}

TEST(EstimatorsTest, QuestIsRotateQuantizeRotateBackWithTheTrustMaskedGradient) {
  torch::manual_seed(6);
  // Rows of 96 = 32 x 3: the block is 32 (max_block 128).
  EXPECT_EQ(QuestBlock(96, 128), 32);
  EXPECT_EQ(QuestBlock(1568, 128), 32);
  EXPECT_EQ(QuestBlock(512, 128), 128);
  EXPECT_EQ(QuestBlock(7, 128), 1);
  for (int64_t bits : {1, 2, 4}) {
    at::Tensor x = (torch::randn({5, 96}) * 2).requires_grad_();
    at::Tensor dy = torch::randn({5, 96});
    at::Tensor y = FakeQuantQuest(x, bits, 128, 1);
    y.backward(dy);
    // The definition with an explicit block-diagonal H.
    at::Tensor h = torch::block_diag({Hadamard(32), Hadamard(32), Hadamard(32)});
    at::Tensor xh = x.detach().to(torch::kDouble).matmul(h);
    at::Tensor clip = xh.pow(2).mean(1, true).sqrt() * QuestGaussianClip(bits) + 1e-8;
    const double levels = (1 << bits) - 1;
    at::Tensor step = 2 * clip / levels;
    at::Tensor q = torch::clamp(torch::round((xh + clip) / step), 0, levels) * step - clip;
    at::Tensor mask = (q - xh).abs().le(step / 2 + 1e-9);
    EXPECT_TRUE(torch::allclose(y.detach().to(torch::kDouble), q.matmul(h.t()), 1e-4, 1e-5)) << "bits " << bits;
    at::Tensor want_dx = ((dy.to(torch::kDouble).matmul(h)) * mask).matmul(h.t());
    EXPECT_TRUE(torch::allclose(x.grad().to(torch::kDouble), want_dx, 1e-4, 1e-5)) << "bits " << bits;
  }
  // Along dimension 1 of a 4-D activation (channels): the same as rows of the moved tensor.
  at::Tensor a = torch::randn({2, 16, 3, 3});
  at::Tensor along = FakeQuantQuest(a, 4, 128, 1);
  at::Tensor rows = FakeQuantQuest(a.movedim(1, -1).reshape({-1, 16}), 4, 128, 1);
  EXPECT_TRUE(torch::allclose(along, rows.view({2, 3, 3, 16}).movedim(-1, 1), 1e-6, 1e-6));
}

TEST(EstimatorsTest, QuestClipTableMinimisesGaussianError) {
  // E[(Q_c(x) - x)^2] for x ~ N(0, 1) by quadrature; the table's clip must
  // beat clips 2% either side.
  at::Tensor x = torch::linspace(-8, 8, 160001, torch::kDouble);
  at::Tensor p = torch::exp(-x * x / 2) / std::sqrt(2 * M_PI);
  auto mse = [&](double c, int bits) {
    const double levels = (1 << bits) - 1, step = 2 * c / levels;
    at::Tensor q = torch::clamp(torch::round((x + c) / step), 0, levels) * step - c;
    return ((q - x).pow(2) * p).sum().item<double>();
  };
  for (int bits = 1; bits <= 6; ++bits) {
    const double c = QuestGaussianClip(bits);
    EXPECT_LT(mse(c, bits), mse(c * 0.98, bits)) << bits;
    EXPECT_LT(mse(c, bits), mse(c * 1.02, bits)) << bits;
  }
  EXPECT_NEAR(QuestGaussianClip(4), 2.5139, 1e-4);
}

TEST(EstimatorsTest, GradientQuantizationIsUnbiasedOnALowBitGrid) {
  torch::manual_seed(7);
  at::Tensor w = torch::randn({8, 4}).requires_grad_();
  at::Tensor x = torch::randn({16, 8});
  at::Tensor dy = torch::randn({16, 4});
  at::Tensor exact = x.t().matmul(dy);
  at::Tensor sum = torch::zeros_like(exact);
  const int draws = 400;
  for (int k = 0; k < draws; ++k) {
    w.mutable_grad().reset();
    at::Tensor y = QuantizeGradient(x.matmul(w), {GradientQuant::kInt8}, k);
    y.backward(dy);
    sum += w.grad();
  }
  EXPECT_TRUE(torch::allclose(sum / draws, exact, 0, 0.02 * exact.abs().max().item<double>()));
  // One draw: dy' is on the int8 grid of absmax / 127.
  at::Tensor probe = torch::zeros({16, 4}).requires_grad_();
  QuantizeGradient(probe, {GradientQuant::kInt8}, 3).backward(dy);
  at::Tensor levels = probe.grad() / (dy.abs().max() / 127);
  EXPECT_TRUE(torch::allclose(levels, torch::round(levels), 0, 1e-3));
  EXPECT_FALSE(torch::equal(probe.grad(), dy));
}

TEST(EstimatorsTest, BadArgumentsAreNamed) {
  at::Tensor x = torch::randn({10});
  EXPECT_THROW(FakeQuantPact(x, torch::tensor({-1.0f}), 4), c10::Error);
  EXPECT_THROW(FakeQuantPact(x, torch::tensor({1.0f}), 9), c10::Error);
  EXPECT_THROW(FakeQuantQuest(x, 0, 128, 0), c10::Error);
  EXPECT_THROW(FakeQuantLsq(x, torch::tensor({0.1f}), {}, -8, 7, {}, 0.0), c10::Error);
  try {
    FakeQuantLsq(x, torch::tensor({0.0f}), {}, -8, 7, {}, 1.0);
    ADD_FAILURE();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("scale must be > 0"), std::string::npos);
  }
}

}  // namespace
}  // namespace lowbit::qat
