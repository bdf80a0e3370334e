// LOWBIT_HOST_DEVICE marks the arithmetic the CPU kernels and their CUDA twins
// share, so both compute it with the same code.
#pragma once

#if defined(__CUDACC__)
#define LOWBIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOWBIT_HOST_DEVICE inline
#endif
