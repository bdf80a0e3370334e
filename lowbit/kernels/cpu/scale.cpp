#include "lowbit/kernels/cpu/scale.h"

#include <ATen/Parallel.h>

namespace lowbit::kernels::cpu {

void ScaleFloat(const float* in, float* out, int64_t n, float scale) {
  // Blocks of 64K floats keep each thread on whole cache lines; the inner
  // loop is a plain contiguous multiply that GCC vectorises at -O2/-O3.
  constexpr int64_t kGrain = int64_t{1} << 16;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = in[i] * scale;
  });
}

}  // namespace lowbit::kernels::cpu
