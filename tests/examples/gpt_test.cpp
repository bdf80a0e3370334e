// The GPT example's model and data against the math written out in one
// process: causality, attention, parameter counts, the tokenizer, the split
// and the window generators.
#include <cmath>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "examples/gpt/model.h"
#include "examples/gpt/text_data.h"
#include "lowbit/qat/prepare.h"
#include "tests/common/expect_error.h"

namespace lowbit::examples::gpt {
namespace {

GptConfig Small(int64_t vocab = 11) {
  GptConfig c;
  c.vocab_size = vocab;
  c.block_size = 16;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 32;
  return c;
}

class GptCausality : public ::testing::TestWithParam<std::string> {};

// Also with every QAT preset (in eval mode, where the quantizers' ranges are
// fixed): a quantizer that mixed positions would let the model see the future.
TEST_P(GptCausality, ChangingTokenTPlusOneLeavesEarlierLogitsUnchanged) {
  torch::manual_seed(3);
  Gpt model(Small());
  const at::Tensor idx = torch::randint(0, 11, {2, 16}, torch::kLong);
  if (!GetParam().empty()) {
    lowbit::qat::Prepare(*model, lowbit::qat::PresetConfig(GetParam()));
    lowbit::qat::Calibrate(*model, [&] { model->forward(idx); });
    model->eval();
  }
  const at::Tensor before = model->forward(idx);
  for (int64_t t : {0, 5, 14}) {
    at::Tensor changed = idx.clone();
    changed.select(1, t + 1).add_(1).remainder_(11);
    const at::Tensor after = model->forward(changed);
    EXPECT_TRUE(torch::equal(after.narrow(1, 0, t + 1), before.narrow(1, 0, t + 1))) << "t = " << t;
    // The changed position itself must see the change (the test can fail).
    EXPECT_FALSE(torch::allclose(after.select(1, t + 1), before.select(1, t + 1))) << "t = " << t;
  }
}
INSTANTIATE_TEST_SUITE_P(QatPresets, GptCausality,
                         ::testing::Values("", "w8a8", "w4a8", "w4a4_lsq", "w4a4_quest", "w2a2_quest", "int8_train",
                                           "fp8_train"),
                         [](const auto& info) { return info.param.empty() ? std::string("fp32") : info.param; });

TEST(GptModel, AttentionEqualsTheMathWrittenOut) {
  torch::manual_seed(5);
  GptConfig c = Small();
  CausalSelfAttention attn(c);
  const int64_t B = 2, T = 7, C = c.n_embd, H = c.n_head, D = C / H;
  const at::Tensor x = torch::randn({B, T, C});
  const at::Tensor got = attn(x).to(torch::kDouble);

  // Per batch, head and position, in double: q k / sqrt(d) over j <= i, softmax, sum of v.
  const at::Tensor w = attn->c_attn->weight.to(torch::kDouble), b = attn->c_attn->bias.to(torch::kDouble);
  const at::Tensor qkv = torch::matmul(x.to(torch::kDouble), w.t()) + b;  // [B, T, 3C]
  at::Tensor y = torch::zeros({B, T, C}, torch::kDouble);
  for (int64_t bi = 0; bi < B; ++bi) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < T; ++i) {
        const at::Tensor q = qkv[bi][i].narrow(0, h * D, D);
        std::vector<double> scores;
        double top = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const at::Tensor k = qkv[bi][j].narrow(0, C + h * D, D);
          scores.push_back((q * k).sum().item<double>() / std::sqrt(static_cast<double>(D)));
          top = std::max(top, scores.back());
        }
        double z = 0;
        for (double& s : scores) z += (s = std::exp(s - top));
        for (int64_t j = 0; j <= i; ++j) {
          y[bi][i].narrow(0, h * D, D) += scores[static_cast<size_t>(j)] / z * qkv[bi][j].narrow(0, 2 * C + h * D, D);
        }
      }
    }
  }
  const at::Tensor want = torch::matmul(y, attn->c_proj->weight.to(torch::kDouble).t()) + attn->c_proj->bias.to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << (got - want).abs().max().item<double>();
}

TEST(GptModel, BlockIsPreLayerNormResidual) {
  torch::manual_seed(7);
  Block block(Small());
  const at::Tensor x = torch::randn({2, 5, 32});
  const at::Tensor mid = x + block->attn(block->ln_1(x));
  const at::Tensor h = block->mlp->c_fc(block->ln_2(mid));
  // GELU written out: x Phi(x), Phi the normal CDF.
  const at::Tensor gelu = h * 0.5 * (1 + torch::erf(h / std::sqrt(2.0)));
  const at::Tensor want = mid + block->mlp->c_proj(gelu);
  EXPECT_TRUE(torch::allclose(block(x), want, 1e-5, 1e-6));
}

TEST(GptModel, HeadIsTiedToTheTokenEmbedding) {
  torch::manual_seed(9);
  Gpt model(Small());
  const at::Tensor idx = torch::randint(0, 11, {1, 4}, torch::kLong);
  at::Tensor x = model->wte(idx) + model->wpe(torch::arange(4));
  for (const auto& block : *model->h) x = block->as<Block>()->forward(x);
  EXPECT_TRUE(torch::allclose(model->forward(idx), torch::matmul(model->ln_f(x), model->wte->weight.t())));
  model->forward(idx).sum().backward();
  EXPECT_GT(model->wte->weight.grad().abs().sum().item<double>(), 0);
}

// 12 L C^2 weights, 13 L C biases and LayerNorm parameters, the embeddings and ln_f.
int64_t ExpectedParameters(const GptConfig& c) {
  return 12 * c.n_layer * c.n_embd * c.n_embd + 13 * c.n_layer * c.n_embd + c.vocab_size * c.n_embd +
         c.block_size * c.n_embd + 2 * c.n_embd;
}

TEST(GptModel, PresetsHaveTheirParameterCounts) {
  for (const char* preset : {"tiny", "medium", "small"}) {
    GptConfig c = GptPreset(preset);
    c.vocab_size = 73;  // the King James Bible's characters
    Gpt model(c);
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    EXPECT_EQ(n, ExpectedParameters(c)) << preset;
  }
  GptConfig tiny = GptPreset("tiny");
  tiny.vocab_size = 73;
  EXPECT_NEAR(static_cast<double>(ExpectedParameters(tiny)), 0.81e6, 0.02e6);
  GptConfig medium = GptPreset("medium");  // issue 33's larger transformer: >= 4M parameters, width >= 256
  medium.vocab_size = 73;
  EXPECT_EQ(ExpectedParameters(medium), 4774144);
  EXPECT_EQ(medium.n_embd, 256);
  GptConfig small = GptPreset("small");
  small.vocab_size = 73;
  EXPECT_NEAR(static_cast<double>(ExpectedParameters(small)), 10.7e6, 0.1e6);
}

TEST(GptModel, InitialisationIsNanoGpts) {
  torch::manual_seed(11);
  GptConfig c = Small(50);
  c.n_embd = 256;
  c.n_head = 4;
  Gpt model(c);
  auto block = model->h[0]->as<Block>();
  EXPECT_NEAR(block->attn->c_attn->weight.std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(block->mlp->c_proj->weight.std().item<double>(), 0.02 / std::sqrt(2.0 * c.n_layer), 0.001);
  EXPECT_EQ(block->mlp->c_fc->bias.abs().sum().item<double>(), 0);
  EXPECT_TRUE(torch::equal(block->ln_1->weight, torch::ones({c.n_embd})));
}

TEST(GptModel, BadConfigsAreNamed) {
  GptConfig c = Small();
  c.n_embd = 30;
  EXPECT_EQ(ValidateGptConfig(c), "--n_embd must be a positive multiple of --n_head (4), got 30");
  lowbit::testing::ExpectError([&] { Gpt{c}; }, "--n_embd must be a positive multiple of --n_head (4), got 30");
  lowbit::testing::ExpectError([&] { GptPreset("huge"); }, "--preset must be tiny, medium or small, got 'huge'");
  Gpt model(Small());
  lowbit::testing::ExpectError([&] { model->forward(torch::zeros({1, 17}, torch::kLong)); }, "sequence of 17 tokens is longer than block_size 16");
}

TEST(GptModel, SampleIsSeededAndRestoresTrainingMode) {
  torch::manual_seed(13);
  Gpt model(Small());
  const at::Tensor prompt = torch::tensor({1, 2, 3}, torch::kLong);
  const at::Tensor a = Sample(model, prompt, 40, 0.8, 7), b = Sample(model, prompt, 40, 0.8, 7);
  const at::Tensor other = Sample(model, prompt, 40, 0.8, 8);
  EXPECT_EQ(a.numel(), 40);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, other));
  EXPECT_TRUE(model->is_training());
  EXPECT_GE(a.min().item<int64_t>(), 0);
  EXPECT_LT(a.max().item<int64_t>(), 11);
}

TEST(CharCorpus, VocabularyIsTheSortedBytesAndRoundTrips) {
  absl::StatusOr<CharCorpus> c = MakeCharCorpus("hello world, hello corpus\n", 0.2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(std::string(c->vocab.begin(), c->vocab.end()), "\n ,cdehloprsuw");
  EXPECT_EQ(c->ids['h'], 6);
  EXPECT_EQ(c->ids['z'], -1);
  EXPECT_EQ(Decode(*c, Encode(*c, "hello")), "hello");
  // 26 characters: the first ceil(0.8 * 26) = 21 train, the last 5 validate.
  EXPECT_EQ(c->train.numel(), 21);
  EXPECT_EQ(Decode(*c, c->val), "rpus\n");
  lowbit::testing::ExpectError([&] { Encode(*c, "hex"); }, "byte 120 ('x') at position 2 is not in the corpus' vocabulary");
  EXPECT_FALSE(MakeCharCorpus("", 0.1).ok());
  EXPECT_FALSE(MakeCharCorpus("abc", 1.0).ok());
}

TEST(CharCorpus, MissingFileNamesThePackages) {
  absl::StatusOr<CharCorpus> c = LoadCharCorpus("/nonexistent/bible.txt");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/bible.txt does not exist: install the Debian packages bible-kjv "
                                      "and bible-kjv-text"),
            std::string::npos)
      << c.status();
}

std::string Text() {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "line " + std::to_string(i * 7919 % 1000) + " of the text;\n";
  return text;
}

TEST(CharCorpus, TrainWindowsAreKeyedBySeedRankAndStep) {
  absl::StatusOr<CharCorpus> c = MakeCharCorpus(Text());
  ASSERT_TRUE(c.ok());
  const at::Tensor a = TrainWindows(*c, 8, 32, 1, 0, 5);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{8, 33}));
  EXPECT_TRUE(torch::equal(a, TrainWindows(*c, 8, 32, 1, 0, 5)));
  EXPECT_FALSE(torch::equal(a, TrainWindows(*c, 8, 32, 1, 1, 5)));
  EXPECT_FALSE(torch::equal(a, TrainWindows(*c, 8, 32, 1, 0, 6)));
  EXPECT_FALSE(torch::equal(a, TrainWindows(*c, 8, 32, 2, 0, 5)));
  // Each window is a contiguous piece of the training split.
  const std::string train = Decode(*c, c->train);
  for (int64_t i = 0; i < 8; ++i) EXPECT_NE(train.find(Decode(*c, a[i])), std::string::npos) << i;
}

TEST(CharCorpus, ValWindowsSpanTheSplitAndCheckTheBlock) {
  absl::StatusOr<CharCorpus> c = MakeCharCorpus(Text());
  ASSERT_TRUE(c.ok());
  const at::Tensor w = ValWindows(*c, 5, 16);
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{5, 17}));
  EXPECT_TRUE(torch::equal(w[0], c->val.narrow(0, 0, 17)));
  EXPECT_TRUE(torch::equal(w[4], c->val.narrow(0, c->val.numel() - 17, 17)));
  const int64_t n = c->val.numel();
  lowbit::testing::ExpectError([&] { ValWindows(*c, 5, n); }, "--block_size " + std::to_string(n) + " needs " + std::to_string(n + 1) +
                                                " tokens of validation text, and the validation split has " +
                                                std::to_string(n));
}

}  // namespace
}  // namespace lowbit::examples::gpt
