// Reads Fashion-MNIST (or MNIST) from gzipped IDX files, as Debian's
// dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace lowbit::examples {

struct ImageSet {
  at::Tensor images;  // float32 [N, 1, 28, 28], normalised to zero mean / unit variance
  at::Tensor labels;  // int64 [N]
};

struct FashionMnist {
  ImageSet train;
  ImageSet test;
};

// NotFound (naming the path and the Debian package) when the files are missing;
// DataLoss when a file is not a valid IDX file.
absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& directory);

}  // namespace lowbit::examples
