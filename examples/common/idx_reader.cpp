#include "examples/common/idx_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace lowbit::examples {
namespace {

// One whole gzip member and nothing after it: zlib checks the CRC-32 and
// length in its trailer. (Not gzread: it passes a file that is not gzip
// through as it is, and stops quietly at bytes after the first member.)
absl::StatusOr<std::vector<uint8_t>> ReadGzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const std::string packed{std::istreambuf_iterator<char>(in), {}};
  // Fashion-MNIST's largest file is 47 MB unpacked; a file that unpacks to
  // more than 1 GiB is refused rather than read into memory.
  constexpr size_t kMaxBytes = size_t{1} << 30;
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return absl::InternalError("zlib: inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
  z.avail_in = static_cast<uInt>(packed.size());
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  int rc = Z_OK;
  while (rc == Z_OK && bytes.size() <= kMaxBytes) {
    z.next_out = chunk;
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    bytes.insert(bytes.end(), chunk, chunk + (sizeof(chunk) - z.avail_out));
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // the input ended inside the stream
  }
  const bool whole = rc == Z_STREAM_END && z.avail_in == 0;
  inflateEnd(&z);
  if (bytes.size() > kMaxBytes) return absl::DataLossError(absl::StrCat(path, " unpacks to more than 1 GiB"));
  if (!whole) {
    return absl::DataLossError(absl::StrCat(path, " is not one whole gzip stream (",
                                            rc == Z_STREAM_END ? "bytes follow its end" : "damaged or cut short", ")"));
  }
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
  // The header's dimensions are checked against the bytes that are there
  // before anything is allocated (a file is untrusted: no overflow, no
  // allocation sized by a damaged header).
  const size_t data = bytes->size() - header;
  std::vector<int64_t> shape;
  size_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const uint32_t size = BigEndian(*bytes, 4 + 4 * d);
    shape.push_back(size);
    if (size != 0 && count > data / size) {
      return absl::DataLossError(absl::StrCat(path, " holds ", data, " bytes of data, its header says more (dimension ",
                                              d, " is ", size, ")"));
    }
    count *= size;
  }
  if (data != count) {
    return absl::DataLossError(absl::StrCat(path, " holds ", data, " bytes of data, its header says ", count));
  }
  at::Tensor t = at::empty(shape, at::kByte);
  if (count > 0) std::memcpy(t.data_ptr(), bytes->data() + header, count);
  return t;
}

absl::StatusOr<ImageSet> ReadSet(const std::string& dir, const std::string& prefix) {
  absl::StatusOr<at::Tensor> images = ReadIdx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 3);
  if (!images.ok()) return images.status();
  absl::StatusOr<at::Tensor> labels = ReadIdx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 1);
  if (!labels.ok()) return labels.status();
  if (images->size(1) != 28 || images->size(2) != 28) {
    return absl::DataLossError(absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz holds ", images->size(1), "x",
                                            images->size(2), " images, not 28x28"));
  }
  if (labels->numel() > 0 && labels->max().item<int>() > 9) {
    return absl::DataLossError(absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz has label ",
                                            labels->max().item<int>(), "; Fashion-MNIST's are 0 to 9"));
  }
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
