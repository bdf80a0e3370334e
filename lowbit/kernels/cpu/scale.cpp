#include "lowbit/kernels/cpu/scale.h"

#include <ATen/Parallel.h>

#include <atomic>

namespace lowbit::kernels::cpu {

void ScaleFloat(const float* in, float* out, int64_t n, float scale) {
  // Blocks of 64K floats keep each thread on whole cache lines; the inner
  // loop is a plain contiguous multiply that GCC vectorises at -O2/-O3.
  constexpr int64_t kGrain = int64_t{1} << 16;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = in[i] * scale;
  });
}

bool AllFiniteFloat(const float* x, int64_t n) {
  // x * 0 is 0 for finite x and NaN for NaN and Inf; eight independent
  // lanes (no reassociation needed) so GCC vectorises the loop.
  constexpr int64_t kGrain = int64_t{1} << 16;
  std::atomic<bool> finite{true};
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      for (int k = 0; k < 8; ++k) acc[k] += x[i + k] * 0.0f;
    }
    float tail = 0.0f;
    for (; i < end; ++i) tail += x[i] * 0.0f;
    float all = tail;
    for (float a : acc) all += a;
    if (all != 0.0f) finite = false;
  });
  return finite;
}

}  // namespace lowbit::kernels::cpu
