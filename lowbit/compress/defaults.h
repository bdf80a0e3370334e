// The defaults of the comm hooks' settings, each written once. The typed
// options (CompressionHookOptions, PowerSgdOptions, TopKOptions,
// AdaptiveOptions), MakeCommHook's registry (compress/registry.h) and the examples'
// flags all take them from here. They are the settings the docs measured
// to train well (docs/comm.md).
//
//   ABSL_FLAG(int, bits, lowbit::compress::defaults::kQsgdBits, "qsgd bits");
#pragma once

#include <cstdint>

namespace lowbit::compress::defaults {

// Tensors with fewer elements (and 1-D tensors) go uncompressed.
inline constexpr int64_t kMinCompressNumel = 1024;
// Elements per scale of qsgd, ternary and onebit.
inline constexpr int64_t kBlock = 256;
inline constexpr int kQsgdBits = 4;
// onebit's per-block scale: 2 = RMS (DeepSpeed's), 1 = mean |x|.
inline constexpr int kOneBitScaleNorm = 2;
// Fraction of elements top-k sends; top-k's DGC density warm-up, and the
// size under which top-k sends a tensor dense (docs/comm.md: 0.8896 against
// 0.8730 without them on Fashion-MNIST).
inline constexpr double kDensity = 0.01;
inline constexpr int64_t kTopKWarmupSteps = 200;
inline constexpr int64_t kTopKMinCompressNumel = 8192;
// Random-k keeps 10%: its values are unbiased but noisy, and 1% trains poorly.
inline constexpr double kRandomKDensity = 0.1;
inline constexpr int kPowerSgdRank = 4;
// PowerSGD's uncompressed warm-up steps (PyTorch's hook uses 10 too).
inline constexpr int64_t kPowerSgdStartIter = 10;
inline constexpr double kMinCompressionRate = 2.0;
// EControl's error weight.
inline constexpr double kEfEta = 0.1;
// L-GreCo: steps between decisions, steps of gradients per decision, error budget.
inline constexpr int64_t kAdaptPeriod = 100;
inline constexpr int64_t kAdaptWindow = 10;
inline constexpr double kAdaptAlpha = 1.0;

}  // namespace lowbit::compress::defaults
