// The process group of a test binary run by tests/common/test_main.cpp.
#pragma once

#include <memory>

#include "lowbit/comm/process_group.h"

namespace lowbit::testing {

std::shared_ptr<comm::ProcessGroup> Pg();

}  // namespace lowbit::testing
