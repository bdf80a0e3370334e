// The public types of the fused optimizer steps: which rule a step applies,
// its scalars, and the dynamic 8-bit code with the table that encodes to it.
// kernels/optim8bit.h takes them; the per-element arithmetic that uses them
// is internal (kernels/internal/optim_math.h).
//
//   lowbit::kernels::OptimStepArgs args;
//   args.rule = lowbit::kernels::OptimRule::kAdam;
//   args.lr = 1e-3f;
#pragma once
#include <cstdint>

#include "lowbit/kernels/host_device.h"

namespace lowbit::kernels {

// Which update a fused step applies.
enum class OptimRule : int32_t { kAdam = 0, kSgd = 1, kLion = 2, kRmsprop = 3, kAdagrad = 4 };

// The scalars of one step of one parameter, prepared on the host (bias
// corrections, learning-rate decay and weight decay folded in).
struct OptimStepArgs {
  OptimRule rule = OptimRule::kAdam;
  float lr = 0;              // the step's learning rate: Adam lr / (1 - beta1^t), Adagrad lr / (1 + (t-1) decay)
  float beta1 = 0;           // Adam and Lion beta1; SGD and RMSprop momentum
  float one_minus_beta1 = 1; // Adam and Lion 1 - beta1; SGD 1 - dampening
  float beta2 = 0;           // Adam and Lion beta2; RMSprop alpha
  float one_minus_beta2 = 1;
  float eps = 0;
  float inv_sqrt_bc2 = 1;    // Adam 1 / sqrt(1 - beta2^t)
  float l2 = 0;              // coupled weight decay: g += l2 p (Adam, SGD, RMSprop, Adagrad)
  float decay = 1;           // decoupled weight decay: p *= decay = 1 - lr wd (AdamW, Lion)
  float grad_scale = 1;      // percentile clipping's factor on the gradient
  int32_t nesterov = 0;      // SGD
  int32_t first_step = 0;    // SGD: the momentum buffer starts as the gradient
};

// One dynamic map and the table that encodes to it. `values` are 256 sorted
// codes; the midpoints of neighbouring codes split the line. Encode(x) is the number of midpoints below x: the nearest code, ties
// to the lower one. To find it without a search, `cells` has one entry per
// (sign, exponent, top 7 mantissa bits) of x: the count of midpoints below the
// cell's lowest value (bits 17..24) and, since the map is coarse enough that a
// cell holds at most one midpoint (BuildDynamicCode checks it), that
// midpoint's low 16 bits in x's order (bits 0..16; 65536 when the cell has
// none). x is above the midpoint exactly when its own low 16 bits, in the same
// order, are greater: one load and one integer comparison. Magnitudes below
// 2^-24 share the lowest cell and those of 2 and above the highest (x is a
// value divided by its block's absmax, so |x| <= 1); neither holds a midpoint.
constexpr int32_t kCellLowExponent = 103;  // 2^-24
constexpr int32_t kCellMantissaBits = 7;
constexpr int32_t kCodeCells = (127 - kCellLowExponent + 1) << kCellMantissaBits;  // per sign
constexpr uint32_t kNoMidpoint = 1u << 16;

struct DynamicCode {
  float values[256];
  uint32_t cells[2 * kCodeCells];
  int32_t is_signed;  // which map: decides how the AVX2 decoder recomputes values
};

// The block of a blockwise 8-bit state: a power of two in [32, 4096] (one
// CUDA warp at least; the CPU loops keep a block's states on the stack).
constexpr int64_t kMinOptimBlock = 32;
constexpr int64_t kMaxOptimBlock = 4096;
LOWBIT_HOST_DEVICE bool IsOptimBlock(int64_t block) {
  return block >= kMinOptimBlock && block <= kMaxOptimBlock && (block & (block - 1)) == 0;
}

}  // namespace lowbit::kernels
