// MiniFloat: a low-precision floating-point format (fp8 e4m3 and e5m2, fp4
// e2m1) as the fake-quantization ops take it (kernels/fake_quant.h).
//
//   at::Tensor y = FakeQuantizeMiniFloat(x, scale, lowbit::kernels::MiniFloatE4M3(), layout);
#pragma once

#include "lowbit/kernels/host_device.h"

namespace lowbit::kernels {

// A mini-float format: exponent bits, mantissa bits, largest finite value.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  float max_value;
};

// e4m3 as in the OCP FP8 spec ("fn": no infinities, max 448), e5m2 (max
// 57344), e2m1 (FP4, max 6).
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE4M3() { return {4, 3, 448.0f}; }
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE5M2() { return {5, 2, 57344.0f}; }
LOWBIT_HOST_DEVICE MiniFloat MiniFloatE2M1() { return {2, 1, 6.0f}; }

}  // namespace lowbit::kernels
