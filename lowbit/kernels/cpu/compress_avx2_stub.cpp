// Built instead of compress_avx2.cpp where the compiler cannot target AVX2;
// HaveAvx2() is then false and none of these is called.
#include <cstdlib>

#include "lowbit/kernels/cpu/internal/compress_avx2.h"

namespace lowbit::kernels::cpu::internal {

float AbsMaxAvx2(const float*, int64_t) { std::abort(); }
void LaneSumsAvx2(const float*, int64_t, int, float*) { std::abort(); }
void QuantizeRunAvx2(const float*, int64_t, int64_t, float, int, int, bool, uint64_t, int64_t, uint8_t*) {
  std::abort();
}
void DequantizeRunAvx2(const uint8_t*, int64_t, int64_t, float, int, int, float*, int) { std::abort(); }
float AddAbsMaxAvx2(const float*, const float*, float*, int64_t) { std::abort(); }
void AddLaneSumsAvx2(const float*, const float*, float*, int64_t, int, float*) { std::abort(); }
void PackSignsResidualAvx2(float*, int64_t, float, uint8_t*) { std::abort(); }
void PackSignsAvx2(const float*, int64_t, uint8_t*) { std::abort(); }
void UnpackSignsAvx2(const uint8_t*, int64_t, float, float*, bool) { std::abort(); }
void UnpackSignsSumAvx2(const uint8_t* const*, const float*, int, int64_t, float, float*) { std::abort(); }
int64_t CountAtLeastAvx2(const float*, int64_t, float) { std::abort(); }
int64_t GatherAtLeastAvx2(const float*, int64_t, float, int64_t, int32_t*, float*) { std::abort(); }

}  // namespace lowbit::kernels::cpu::internal
