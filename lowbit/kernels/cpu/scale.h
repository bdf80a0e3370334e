// CPU kernel: out[i] = in[i] * scale over contiguous floats (in == out is allowed).
// Raw pointers and counts only; the ops layer (kernels/scale.h) does the checks.
#pragma once
#include <cstdint>

namespace lowbit::kernels::cpu {

void ScaleFloat(const float* in, float* out, int64_t n, float scale);
// No element is NaN or +-Inf.
bool AllFiniteFloat(const float* x, int64_t n);

}  // namespace lowbit::kernels::cpu
