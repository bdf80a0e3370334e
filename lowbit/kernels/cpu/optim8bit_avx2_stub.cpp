// Built instead of optim8bit_avx2.cpp where the compiler cannot target AVX2:
// the baseline loops of optim8bit.cpp run.
#include "lowbit/kernels/cpu/internal/optim8bit_avx2.h"

namespace lowbit::kernels::cpu::internal {

bool HaveAvx2() { return false; }
bool OptimizerStep8bitAvx2(const OptimStepArgs&, float*, const float*, int64_t, int64_t, uint8_t*, float*, uint8_t*,
                           float*, const DynamicCode&, const DynamicCode&) {
  return false;
}
bool EncodeBlocksAvx2(const float*, int64_t, int64_t, const DynamicCode&, const float*, uint8_t*) { return false; }
bool DecodeBlocksAvx2(const uint8_t*, const float*, int64_t, int64_t, const DynamicCode&, float*) { return false; }
bool OptimizerStep32bitAvx2(const OptimStepArgs&, float*, const float*, int64_t, float*, float*) { return false; }

}  // namespace lowbit::kernels::cpu::internal
