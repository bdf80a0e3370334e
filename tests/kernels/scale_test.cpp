#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/kernels/cpu/scale.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::kernels {
namespace {

TEST(ScaleInPlace, MatchesMultiplicationForEveryLength) {
  for (int64_t n : {0, 1, 7, 64, 1000, 65537, 300001}) {
    at::Tensor x = torch::randn({n}, torch::TensorOptions().dtype(torch::kFloat));
    at::Tensor expected = x * 0.25f;
    ScaleInPlace(x, 0.25);
    EXPECT_TRUE(torch::equal(x, expected)) << "n=" << n;
  }
}

TEST(ScaleInPlace, OtherFloatingDtypes) {
  for (auto dtype : {torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    at::Tensor x = torch::randn({100}).to(dtype);
    at::Tensor expected = x * 0.5;
    ScaleInPlace(x, 0.5);
    EXPECT_TRUE(torch::equal(x, expected)) << dtype;
  }
}

TEST(ScaleInPlace, RejectsBadInput) {
  at::Tensor ints = torch::ones({4}, torch::kInt);
  try {
    ScaleInPlace(ints, 2.0);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Int"), std::string::npos) << e.what();
  }
  at::Tensor strided = torch::ones({4, 4}).t();
  EXPECT_THROW(ScaleInPlace(strided, 2.0), c10::Error);
}

TEST(ScaleFloatCpu, OutOfPlace) {
  std::vector<float> in{1, 2, 3}, out(3);
  cpu::ScaleFloat(in.data(), out.data(), 3, -2.0f);
  EXPECT_EQ(out, (std::vector<float>{-2, -4, -6}));
}

}  // namespace
}  // namespace lowbit::kernels
