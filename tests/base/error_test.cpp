// lowbit::base::Error: the message alone in what(), no backtrace and no path
// of the machine that built the library, for lowbit's own checks and for
// errors that come through the public API.
#include "lowbit/base/error.h"

#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lowbit/comm/local_process_group.h"
#include "lowbit/compress/registry.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/train/checkpoint.h"

namespace lowbit::base {
namespace {

// What an error thrown by `f` says.
template <typename F>
std::string WhatOf(F f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

void ExpectClean(const std::string& what) {
  EXPECT_EQ(what.find("Exception raised from"), std::string::npos) << what;
  EXPECT_EQ(what.find("frame #"), std::string::npos) << what;
  EXPECT_EQ(what.find(LOWBIT_TEST_SOURCE_DIR), std::string::npos) << what;
  EXPECT_EQ(what.find(".cpp:"), std::string::npos) << what;
}

TEST(ErrorTest, WhatIsTheMessageAlone) {
  const std::string what = WhatOf([] { LOWBIT_CHECK(1 + 1 == 3, "qsgd: bits must be in [1, 8], got ", 9); });
  EXPECT_EQ(what, "qsgd: bits must be in [1, 8], got 9");
  try {
    LOWBIT_CHECK(false, "x");
  } catch (const std::exception& e) {  // a std::exception and a c10::Error
    EXPECT_STREQ(e.what(), "x");
    EXPECT_NE(dynamic_cast<const c10::Error*>(&e), nullptr);
    EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr);
  }
  LOWBIT_CHECK(true, "never built");
}

TEST(ErrorTest, LibTorchErrorsLoseTheirBacktraceInMessage) {
  try {
    TORCH_CHECK(false, "from LibTorch");
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("Exception raised from"), std::string::npos)
        << "LibTorch's own errors carry one, which Message() strips";
    EXPECT_EQ(Message(e), "from LibTorch");
  }
  EXPECT_EQ(Message(std::runtime_error("plain")), "plain");
}

TEST(ErrorTest, SourcePathStartsAtTheLibrary) {
  EXPECT_STREQ(SourcePath("/home/build/src/lowbit/comm/mpi_process_group.cpp"), "lowbit/comm/mpi_process_group.cpp");
  EXPECT_STREQ(SourcePath("/x/lowbit/y/lowbit/comm/a.cpp"), "lowbit/comm/a.cpp");
  EXPECT_STREQ(SourcePath("a.cpp"), "a.cpp");
  static_assert(SourcePath("/p/lowbit/k/x.cpp")[0] == 'l', "computed at compile time");
}

// Errors from the API, as a user sees them.
TEST(ErrorTest, ApiErrorsAreClean) {
  auto pg = std::make_shared<comm::LocalProcessGroup>();
  const std::string preset = WhatOf([] { qat::PresetConfig("w5a5"); });
  EXPECT_NE(preset.find("unknown QAT preset 'w5a5'"), std::string::npos) << preset;
  ExpectClean(preset);
  const std::string hook = WhatOf([&] { compress::MakeCommHook(pg, "qsgd:bits=9"); });
  EXPECT_NE(hook.find("bits"), std::string::npos) << hook;
  ExpectClean(hook);
  // Checkpoint's own prefix once, after the rank.
  torch::nn::Linear model(2, 2);
  train::Checkpoint ckpt(::testing::TempDir() + "/lowbit_error_test_missing", pg);
  ckpt.Model(*model);
  const std::string restore = WhatOf([&] { ckpt.Restore(); });
  EXPECT_EQ(restore.rfind("Checkpoint::Restore on rank 0: ", 0), 0u) << restore;
  EXPECT_EQ(restore.find("Checkpoint::Restore: "), std::string::npos) << restore;
  EXPECT_EQ(restore.find("Checkpoint: "), std::string::npos) << restore;
  EXPECT_NE(restore.find("no checkpoint in "), std::string::npos) << restore;
  ExpectClean(restore);
}

}  // namespace
}  // namespace lowbit::base
