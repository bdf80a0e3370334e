// ComPEFT (Yadav et al. 2023, "ComPEFT: Compression for Communicating
// Parameter Efficient Updates via Sparsification and Quantization"): a
// task vector tau = theta_finetuned - theta_base, per tensor, becomes
//   tau_hat = alpha * std(tau) * sign(tau) on the k = ceil(density * n)
//             entries of largest |tau|, 0 elsewhere
// (top-k, then ternary with one scale per tensor). A tensor is stored as
// its element count, k, the scale, the kept positions as LEB128 gaps and
// one sign bit each: about 1.1 bytes per kept entry at 5% density.
//
//   lowbit::compress::ComPeftOptions o;
//   o.density = 0.05;
//   int64_t bytes = lowbit::compress::SaveTaskVector(*finetuned, *base, o, "delta.lbtv");
//   lowbit::compress::ApplyTaskVector(*base, "delta.lbtv");   // base += tau_hat
//
// The same code compresses gradients and DiLoCo's pseudo-gradients:
// MakeComPeftCompressor (registry name "compeft", with error feedback).
//
// File format (little-endian): "LBTV", uint32 version 2, uint32 tensor
// count; per tensor: uint32 name length, the name, uint32 dimensions,
// int64 each, uint64 payload length, the payload (EncodeSparseTernary);
// then the CRC-32 of every byte before it (version 1 files, without it, are
// still read).
// Files are untrusted: every length and position is checked before use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "lowbit/compress/compressor.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace lowbit::compress {

struct ComPeftOptions {
  double density = 0.05;  // fraction of each tensor kept, in (0, 1]
  double alpha = 1.0;     // the scale is alpha * std(tau), alpha > 0
};
void CheckComPeftOptions(const ComPeftOptions& o);

// tau_hat of a float32 tensor (any shape), as bytes (uint8), and back into
// `out` (float32, `numel` elements; accumulate adds). Decode checks the
// payload against `numel`.
at::Tensor EncodeSparseTernary(const at::Tensor& tau, const ComPeftOptions& o);
void DecodeSparseTernary(const at::Tensor& payload, at::Tensor& out, bool accumulate);

// Writes tau_hat for every parameter of `finetuned` (by name; `base` must
// have the same names and shapes) to `path`; returns the file's size in bytes.
int64_t SaveTaskVector(torch::nn::Module& finetuned, torch::nn::Module& base, const ComPeftOptions& o,
                       const std::string& path);
// Adds the file's tau_hat (times `scale`) to the matching parameters of
// `model`; throws naming the first name or shape that does not fit.
void ApplyTaskVector(torch::nn::Module& model, const std::string& path, double scale = 1.0);

// The compressor: messages are EncodeSparseTernary payloads, all-gathered.
std::shared_ptr<Compressor> MakeComPeftCompressor(const ComPeftOptions& o);

}  // namespace lowbit::compress
