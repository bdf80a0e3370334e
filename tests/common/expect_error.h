// ExpectError(f, needle): f must throw a c10::Error (TORCH_CHECK) whose
// message contains needle; a test failure otherwise, naming what was wanted.
#pragma once

#include <functional>
#include <string>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace lowbit::testing {

inline void ExpectError(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace lowbit::testing
