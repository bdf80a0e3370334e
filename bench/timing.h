// Timing for the single-process benchmarks (no MPI): the best of several
// runs after one warm-up, the usual estimate of a kernel's cost on a VM
// whose noise only ever adds time.
#pragma once

#include <algorithm>
#include <chrono>

namespace lowbit::bench {

inline double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
double BestSeconds(F&& f, int reps = 7) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = Seconds();
    f();
    best = std::min(best, Seconds() - t0);
  }
  return best;
}

}  // namespace lowbit::bench
