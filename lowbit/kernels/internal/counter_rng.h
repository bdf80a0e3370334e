// A counter-based random generator shared by the CPU and CUDA kernels.
//
// Uniform(key, i) is a pure function of a 64-bit key and an element index, so
// stochastic rounding, random-k and PowerSGD's initial factors give the same
// numbers on every rank, on CPU and GPU, and after a resume, without any state.
// The mixer is SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom
// number generators", OOPSLA 2014), applied to key + (i + 1) * golden-ratio.
#pragma once
#include <cstdint>

#include "lowbit/kernels/host_device.h"

namespace lowbit::kernels {

LOWBIT_HOST_DEVICE uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Combines key parts (seed, step, rank, parameter, ...) into one key.
LOWBIT_HOST_DEVICE uint64_t MixKey(uint64_t key, uint64_t part) { return SplitMix64(key ^ SplitMix64(part)); }

LOWBIT_HOST_DEVICE uint64_t RandomBits(uint64_t key, int64_t i) {
  return SplitMix64(key + static_cast<uint64_t>(i + 1) * 0xD1B54A32D192ED03ull);
}

// Uniform in [0, 1) with 24 random bits, exactly representable as float.
LOWBIT_HOST_DEVICE float Uniform(uint64_t key, int64_t i) {
  return static_cast<float>(RandomBits(key, i) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace lowbit::kernels
