// lowbit's errors and warnings: what a user sees when something is wrong.
//
// Every check in the library throws lowbit::base::Error through
// LOWBIT_CHECK. It is a c10::Error, so `catch (const c10::Error&)` and
// `catch (const std::exception&)` catch it as they catch LibTorch's own, but
// its what() is the message alone: no C++ backtrace and no source path of
// the machine lowbit was built on (c10::Error's what() carries both, and
// TORCH_SHOW_CPP_STACKTRACES does not turn the "Exception raised from"
// line off).
//
//   LOWBIT_CHECK(bits >= 1 && bits <= 8, "qsgd: bits must be in [1, 8], got ", bits);
//   ...
//   } catch (const std::exception& e) {
//     std::cerr << e.what() << "\n";   // "qsgd: bits must be in [1, 8], got 9"
//   }
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <exception>
#include <iostream>
#include <string>
#include <utility>

namespace lowbit::base {

class Error : public c10::Error {
 public:
  // No backtrace: `{}` is the empty one in every LibTorch (a string in 1.13,
  // a lazily computed value in 2.x).
  explicit Error(std::string message) : c10::Error(std::move(message), {}) {}
  const char* what() const noexcept override { return what_without_backtrace(); }
};

[[noreturn]] inline void Throw(std::string message) { throw Error(std::move(message)); }

// The message of any exception, without the backtrace and source location
// LibTorch's c10::Error adds (for errors of LibTorch's that lowbit passes on).
inline std::string Message(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

// One line on stderr, "lowbit: warning: <message>", written at once so that
// ranks sharing a terminal do not interleave within it.
inline void Warn(const std::string& message) { std::cerr << ("lowbit: warning: " + message + "\n") << std::flush; }

// __FILE__ from "lowbit/" on: the MPI, CUDA and NCCL checks name where a
// call failed without the path of the machine that built the library.
constexpr const char* SourcePath(const char* file) {
  const char* start = file;
  for (const char* p = file; *p != '\0'; ++p) {
    if (p[0] == '/' && p[1] == 'l' && p[2] == 'o' && p[3] == 'w' && p[4] == 'b' && p[5] == 'i' && p[6] == 't' &&
        p[7] == '/') {
      start = p + 1;
    }
  }
  return start;
}

}  // namespace lowbit::base

// Throws lowbit::base::Error with the arguments streamed together (as
// TORCH_CHECK's) when `cond` is false.
#define LOWBIT_CHECK(cond, ...)                     \
  if (C10_UNLIKELY(!(cond))) {                      \
    ::lowbit::base::Throw(::c10::str(__VA_ARGS__)); \
  }
