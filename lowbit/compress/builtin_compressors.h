// The compressors lowbit ships (see comm/compressor.h for the interface).
//
// | factory              | message                                  | exchange (default first) |
// |----------------------|------------------------------------------|-------------|
// | MakeCastCompressor   | fp16 or bf16 values                      | allreduce   |
// | MakeQsgdCompressor   | b-bit codes + a float scale per block    | allgather, two-phase |
// | MakeTernaryCompressor| 2-bit codes {-s, 0, s} + scale per block | allgather, two-phase |
// | MakeSignCompressor   | 1 bit per element + a float scale per block | allgather, two-phase |
// | MakeTopKCompressor   | int32 indices + float values             | allgather   |
// | MakeRandomKCompressor| float values at shared random indices    | allreduce   |
//
//   TopKOptions options;
//   options.density = 0.01;
//   std::shared_ptr<Compressor> c = MakeTopKCompressor(options);
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/core/ScalarType.h>

#include "lowbit/compress/compressor.h"
#include "lowbit/compress/defaults.h"

namespace lowbit::compress {

// fp16 / bf16 cast (PyTorch's fp16_compress_hook / bf16_compress_hook).
std::shared_ptr<Compressor> MakeCastCompressor(at::ScalarType dtype);

// QSGD (Alistarh et al. 2017) with per-block max scaling: `bits` in [1, 8],
// 2^bits - 1 intervals, stochastic rounding (unbiased) unless disabled.
std::shared_ptr<Compressor> MakeQsgdCompressor(int bits, int64_t block = 256, bool stochastic = true);

// TernGrad (Wen et al. 2017): values in {-s, 0, s}, s = the block's max |x|,
// stochastic rounding; 2 bits per element.
std::shared_ptr<Compressor> MakeTernaryCompressor(int64_t block = 1024, bool stochastic = true);

// 1-bit sign, decode(x) = s * sign(x) with sign(0) = +1, one scale s per
// block of `block` elements (a multiple of 8; 0: one for the whole message,
// as DeepSpeed). scale_norm 2: s = ||x||_2 / sqrt(n), 1-bit Adam's (Tang et
// al. 2021); 1: s = ||x||_1 / n, the least-squares scale (Karimireddy et al.
// 2019, "Error feedback fixes SignSGD").
std::shared_ptr<Compressor> MakeSignCompressor(int64_t block = 0, int scale_norm = 2);

struct TopKOptions {
  // Fraction of elements sent, in (0, 1].
  double density = defaults::kDensity;
  // Deep Gradient Compression's sampled threshold (Lin et al. 2018, sec. 3.1):
  // the threshold is estimated on this fraction of |x| and refined with an
  // exact top-k when it selects more than 1.3k elements; 0 = exact top-k.
  double sample_ratio = 0.0;
  // DGC's density warm-up: over the first `warmup_steps` steps the density
  // falls in 4 stages from 25% to `density` (e.g. 25%, 6.3%, 1.6%, 0.4%).
  int64_t warmup_steps = 0;
};
std::shared_ptr<Compressor> MakeTopKCompressor(const TopKOptions& options);
// The density top-k uses at `step` (after warm-up: options.density).
double TopKDensityAt(const TopKOptions& options, int64_t step);

// Random-k: each element is kept with probability `density`, chosen by the
// shared key so every rank keeps the same ones and the values allreduce.
std::shared_ptr<Compressor> MakeRandomKCompressor(double density);

}  // namespace lowbit::compress
