// Export of N:M-sparse weights in compressed form, and the way back.
//
//   lowbit::sparsity::ExportNm(sparsifier, "model.nm");     // after training
//   std::map<std::string, at::Tensor> w = lowbit::sparsity::ImportNm("model.nm");
//   // w["fc1"] equals the trained sparse fc1 weight, bit for bit
//
// File format (a LibTorch archive, readable with torch::load or Python's
// torch.jit.load): "format" = int64 [1] (1); for each N:M layer of the
// Sparsifier, under its dotted name N:
//   N.values   float [rows, in / m * n]: the kept weights, group by group
//   N.index    uint8 [rows, in / m * n]: each value's position in its group
//              of m (increasing within a group)
//   N.nm       int64 [2]: n, m
//   N.shape    int64: the weight's shape
// rows and in are those of the input-major view (sparsifier.h InputMajor):
// a Linear weight [out, in] as it is; a Conv2d weight [out, in, kh, kw] as
// [out * kh * kw, in]. Layers whose pattern is not N:M, and PGF layers whose
// N has not reached its target, are refused, naming the layer.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "lowbit/sparsity/sparsifier.h"

namespace lowbit::sparsity {

void ExportNm(const Sparsifier& sparsifier, const std::string& path);

// The dense weights of every layer in the file, by name, in their shapes.
std::map<std::string, at::Tensor> ImportNm(const std::string& path);

}  // namespace lowbit::sparsity
