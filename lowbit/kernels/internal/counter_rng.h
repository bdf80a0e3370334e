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

// The stream of stochastic rounding (QSGD, ternary): cheaper than Uniform
// because it needs only 32-bit multiplies, which SIMD units have (8 lanes per
// AVX2 instruction), while SplitMix64's 64-bit ones are scalar on x86. Hash32
// is Wellons' "lowbias32" integer hash (a bijection on 32 bits; see
// nullprogram.com/blog/2018/07/31). Element i's noise is half of
//   Hash32(RoundingSeed(key, i) ^ (low 32 bits of i) / 2 * 0x9E3779B1), / 2^16
// (see RoundingNoiseWithSeed), so for one key and 2^32 consecutive indices no
// two pairs hash alike, and two keys' streams are not shifts of each other
// (the seed is xored with a multiplicative sequence, then mixed). The CPU SIMD loops
// (kernels/cpu/compress_avx2.cpp) compute exactly this.
LOWBIT_HOST_DEVICE uint32_t Hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// The 32-bit seed for the indices sharing i's high 32 bits.
LOWBIT_HOST_DEVICE uint32_t RoundingSeed(uint64_t key, int64_t i) {
  const uint64_t z = SplitMix64(key ^ (static_cast<uint64_t>(i) >> 32));
  return static_cast<uint32_t>(z ^ (z >> 32));
}

// One hash serves two neighbouring elements: element i takes 16 bits of
// Hash32(seed ^ (i / 2) * 0x9E3779B1), the low half for even i, the high
// half for odd i. 16 bits of noise bias stochastic rounding by at most 2^-17
// of a step.
LOWBIT_HOST_DEVICE float RoundingNoiseWithSeed(uint32_t seed, int64_t i) {
  const uint32_t h = Hash32(seed ^ ((static_cast<uint32_t>(i) >> 1) * 0x9E3779B1u));
  return static_cast<float>((i & 1) ? (h >> 16) : (h & 0xFFFFu)) * (1.0f / 65536.0f);
}

// Uniform in [0, 1) with 16 random bits, for stochastic rounding.
LOWBIT_HOST_DEVICE float RoundingNoise(uint64_t key, int64_t i) {
  return RoundingNoiseWithSeed(RoundingSeed(key, i), i);
}

}  // namespace lowbit::kernels
