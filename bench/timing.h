// Timing for the single-process benchmarks (no MPI): the best of several
// runs after one warm-up, the usual estimate of a kernel's cost on a VM
// whose noise only ever adds time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>

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

// One JSON line for a kernel over `floats` float32 values: its time, GB/s of
// input, the ratio to a memory copy of the same bytes and, when aten_seconds
// > 0, its speedup over ATen's version of the operation.
inline void PrintKernelLine(const char* bench, const char* kernel, int64_t floats, int threads, double seconds,
                            double memcpy_seconds, double aten_seconds) {
  const double bytes = static_cast<double>(floats) * 4;
  std::printf("{\"bench\":\"%s\",\"kernel\":\"%s\",\"floats\":%lld,\"threads\":%d,\"seconds\":%.6g,"
              "\"gbps\":%.4g,\"ratio_vs_memcpy\":%.4g",
              bench, kernel, static_cast<long long>(floats), threads, seconds, bytes / seconds / 1e9,
              memcpy_seconds / seconds);
  if (aten_seconds > 0) std::printf(",\"aten_seconds\":%.6g,\"speedup_vs_aten\":%.4g", aten_seconds, aten_seconds / seconds);
  std::printf("}\n");
  std::fflush(stdout);
}

}  // namespace lowbit::bench
