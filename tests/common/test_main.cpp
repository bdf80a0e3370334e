// GoogleTest main for lowbit tests that run on one or several ranks: it builds
// the process group from the launcher's environment (mpirun, torchrun or none)
// before the tests and tears it down after them.
#include <iostream>
#include <string>

#include <gtest/gtest.h>

#include "lowbit/launch/init.h"
#include "tests/common/test_env.h"

namespace lowbit::testing {
namespace {
std::shared_ptr<comm::ProcessGroup>& Slot() {
  static auto* pg = new std::shared_ptr<comm::ProcessGroup>();
  return *pg;
}
// Ranks other than 0 print only their failures, each with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  // Not UnitTest::current_test_info(): GoogleTest holds the lock it takes
  // while it reports a result.
  void OnTestStart(const ::testing::TestInfo& test) override {
    test_ = std::string(test.test_suite_name()) + "." + test.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::cerr << "rank " << rank_ << ": " << test_ << " failed at " << (r.file_name() ? r.file_name() : "?") << ":" << r.line_number() << "\n"
              << r.message() << std::endl;
  }

 private:
  int rank_;
  std::string test_;
};
}  // namespace

std::shared_ptr<comm::ProcessGroup> Pg() { return Slot(); }

}  // namespace lowbit::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto pg = lowbit::launch::InitProcessGroup();
  if (!pg.ok()) {
    std::cerr << "cannot initialise the process group: " << pg.status() << "\n";
    return 1;
  }
  lowbit::testing::Slot() = *pg;
  if ((*pg)->Rank() != 0) {
    // One rank's progress lines are enough; the others print their failures.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new lowbit::testing::FailurePrinter((*pg)->Rank()));
  }
  const int result = RUN_ALL_TESTS();
  lowbit::testing::Slot().reset();
  return result;
}
