// GoogleTest main for lowbit tests that run on one or several ranks: it builds
// the process group from the launcher's environment (mpirun, torchrun or none)
// before the tests and tears it down after them.
#include <iostream>

#include <gtest/gtest.h>

#include "lowbit/launch/init.h"
#include "tests/common/test_env.h"

namespace lowbit::testing {
namespace {
std::shared_ptr<comm::ProcessGroup>& Slot() {
  static auto* pg = new std::shared_ptr<comm::ProcessGroup>();
  return *pg;
}
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
    // One rank's progress lines are enough; failures still print everywhere.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  lowbit::testing::Slot().reset();
  return result;
}
