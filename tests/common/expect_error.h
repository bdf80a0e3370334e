// ExpectError(f, needle): f must throw a c10::Error (lowbit's LOWBIT_CHECK
// throws lowbit::base::Error, one) whose what() contains needle and carries
// no LibTorch backtrace or "Exception raised from <source path>" line; a
// test failure otherwise, naming what was wanted.
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
    const std::string what = e.what();
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_EQ(what.find("Exception raised from"), std::string::npos) << "a backtrace in what(): " << what;
    EXPECT_EQ(what.find("most recent call first"), std::string::npos) << "a backtrace in what(): " << what;
  }
}

}  // namespace lowbit::testing
