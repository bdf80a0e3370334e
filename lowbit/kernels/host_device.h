// LOWBIT_HOST_DEVICE marks the arithmetic the CPU kernels and their CUDA twins
// share, so both compute it with the same code.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LOWBIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOWBIT_HOST_DEVICE inline
#endif

namespace lowbit::kernels {

// A float's bits and back, on host and device.
LOWBIT_HOST_DEVICE uint32_t FloatBits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

LOWBIT_HOST_DEVICE float BitsFloat(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

}  // namespace lowbit::kernels
