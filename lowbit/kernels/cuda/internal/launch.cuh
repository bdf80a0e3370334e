// Launch geometry shared by the grid-stride CUDA kernels.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cuda::launch {

constexpr int kThreads = 256;

// Enough blocks of kThreads for `items` work items, at most 65535 (the
// kernels stride over the rest).
inline int BlocksFor(int64_t items) {
  const int64_t want = (items + kThreads - 1) / kThreads;
  return static_cast<int>(want < 1 ? 1 : (want > 65535 ? 65535 : want));
}

}  // namespace lowbit::kernels::cuda::launch
