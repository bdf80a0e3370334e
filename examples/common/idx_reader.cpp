#include "examples/common/idx_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace lowbit::examples {
namespace {

absl::StatusOr<std::vector<uint8_t>> ReadGzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  int n = 0;
  while ((n = gzread(file, chunk, sizeof(chunk))) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
  const bool failed = n < 0;
  gzclose(file);
  if (failed) return absl::DataLossError(absl::StrCat(path, " is not a readable gzip file"));
  return bytes;
}

uint32_t BigEndian(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}

// IDX: magic (0x0803 images / 0x0801 labels), dimensions, then uint8 data.
absl::StatusOr<at::Tensor> ReadIdx(const std::string& path, int dims) {
  absl::StatusOr<std::vector<uint8_t>> bytes = ReadGzip(path);
  if (!bytes.ok()) return bytes.status();
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes->size() < header || BigEndian(*bytes, 0) != static_cast<uint32_t>(0x0800 + dims)) {
    return absl::DataLossError(absl::StrCat(path, " is not an IDX file with ", dims, " dimensions"));
  }
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(BigEndian(*bytes, 4 + 4 * d));
    count *= shape.back();
  }
  if (bytes->size() != header + static_cast<size_t>(count)) {
    return absl::DataLossError(absl::StrCat(path, " holds ", bytes->size() - header, " bytes of data, its header says ",
                                            count));
  }
  at::Tensor t = at::empty(shape, at::kByte);
  std::memcpy(t.data_ptr(), bytes->data() + header, count);
  return t;
}

absl::StatusOr<ImageSet> ReadSet(const std::string& dir, const std::string& prefix) {
  absl::StatusOr<at::Tensor> images = ReadIdx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 3);
  if (!images.ok()) return images.status();
  absl::StatusOr<at::Tensor> labels = ReadIdx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 1);
  if (!labels.ok()) return labels.status();
  if (images->size(0) != labels->size(0)) {
    return absl::DataLossError(absl::StrCat(dir, ": ", prefix, " has ", images->size(0), " images but ",
                                            labels->size(0), " labels"));
  }
  // Fashion-MNIST's training-set mean and standard deviation.
  constexpr double kMean = 0.2860, kStd = 0.3530;
  ImageSet set;
  set.images = images->to(at::kFloat).div_(255.0).sub_(kMean).div_(kStd).unsqueeze(1).contiguous();
  set.labels = labels->to(at::kLong);
  return set;
}

}  // namespace

absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& directory) {
  struct stat info {};
  if (stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::NotFoundError(absl::StrCat("Fashion-MNIST directory ", directory,
                                            " does not exist; install the Debian package dataset-fashion-mnist "
                                            "(apt-get install dataset-fashion-mnist) or pass --data_dir"));
  }
  FashionMnist data;
  absl::StatusOr<ImageSet> train = ReadSet(directory, "train");
  if (!train.ok()) return train.status();
  absl::StatusOr<ImageSet> test = ReadSet(directory, "t10k");
  if (!test.ok()) return test.status();
  data.train = *std::move(train);
  data.test = *std::move(test);
  return data;
}

}  // namespace lowbit::examples
