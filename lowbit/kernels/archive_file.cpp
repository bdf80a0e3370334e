#include "lowbit/kernels/archive_file.h"

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/serialize/input-archive.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "lowbit/base/error.h"

namespace lowbit::kernels {
namespace {

uint32_t Crc32Bytes(const char* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ static_cast<uint8_t>(data[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Little-endian reads that never leave the buffer.
struct Bytes {
  const std::string& b;
  bool Has(uint64_t at, uint64_t n) const { return at <= b.size() && n <= b.size() - at; }
  uint32_t U16(uint64_t at) const {
    return static_cast<uint32_t>(static_cast<uint8_t>(b[at])) | static_cast<uint32_t>(static_cast<uint8_t>(b[at + 1]))
                                                                    << 8;
  }
  uint32_t U32(uint64_t at) const { return U16(at) | U16(at + 2) << 16; }
};

}  // namespace

uint32_t Crc32(const void* data, size_t n) { return Crc32Bytes(static_cast<const char*>(data), n); }

namespace {

std::string ReadWholeFile(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), who, ": cannot read ", path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// CheckZipFile on bytes already read (`path` only names them in errors).
void CheckZipBytes(const std::string& data, const std::string& path, const std::string& who) {
  const Bytes z{data};
  const std::string bad = who + ": " + path + " is not a whole LibTorch archive: ";
  // The end-of-central-directory record: 22 bytes and a comment of up to 65,535.
  LOWBIT_CHECK(data.size() >= 22, bad, "it has ", data.size(), " bytes");
  uint64_t end = data.size() - 22;
  const uint64_t lowest = data.size() >= 22 + 65535 ? data.size() - 22 - 65535 : 0;
  while (z.U32(end) != 0x06054b50u || end + 22 + z.U16(end + 20) != data.size()) {
    LOWBIT_CHECK(end > lowest, bad, "no end-of-central-directory record");
    --end;
  }
  const uint32_t entries = z.U16(end + 10), cd_size = z.U32(end + 12), cd_offset = z.U32(end + 16);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) return;  // zip64: LibTorch checks
  LOWBIT_CHECK(z.U16(end + 4) == 0 && z.U16(end + 6) == 0 && z.U16(end + 8) == entries, bad, "a multi-disk end record");
  LOWBIT_CHECK(z.Has(cd_offset, cd_size) && cd_offset + cd_size <= end, bad, "the central directory (", cd_size,
               " bytes at ", cd_offset, ") lies outside the file");
  struct Entry {
    std::string name;
    uint32_t crc, size;
  };
  std::vector<Entry> compressed;
  uint64_t at = cd_offset;
  for (uint32_t e = 0; e < entries; ++e) {
    LOWBIT_CHECK(z.Has(at, 46) && at + 46 <= cd_offset + cd_size && z.U32(at) == 0x02014b50u, bad,
                 "central directory entry ", e, " is damaged");
    const uint32_t method = z.U16(at + 10), crc = z.U32(at + 16), packed = z.U32(at + 20), size = z.U32(at + 24);
    const uint32_t name_len = z.U16(at + 28), extra_len = z.U16(at + 30), comment_len = z.U16(at + 32);
    const uint32_t local = z.U32(at + 42);
    LOWBIT_CHECK(at + 46 + name_len + extra_len + comment_len <= cd_offset + cd_size, bad, "central directory entry ",
                 e, " runs past the directory");
    const std::string name = data.substr(at + 46, name_len);
    // What LibTorch's reader (miniz) would take as a folder, an encrypted or
    // patched entry, or a method it cannot unpack: none of these are in a
    // file torch::save wrote, and a folder reads as no bytes at all.
    const uint32_t flags = z.U16(at + 8), external = z.U32(at + 38);
    LOWBIT_CHECK((flags & 0x61) == 0 && (method == 0 || method == 8) && (external & 0x10) == 0 && !name.empty() &&
                     name.back() != '/',
                 bad, "entry '", name, "' is not a plain file entry (flags ", flags, ", method ", method,
                 ", attributes ", external, ")");
    LOWBIT_CHECK(z.Has(local, 30 + uint64_t{name_len}) && z.U32(local) == 0x04034b50u, bad, "the local header of '",
                 name, "' is missing or damaged");
    const uint32_t local_name_len = z.U16(local + 26), local_extra_len = z.U16(local + 28);
    LOWBIT_CHECK(
        z.U16(local + 8) == method && local_name_len == name_len && data.compare(local + 30, name_len, name) == 0, bad,
        "the local header of '", name, "' disagrees with the central directory");
    const uint64_t begin = local + 30 + uint64_t{local_name_len} + local_extra_len;
    LOWBIT_CHECK(z.Has(begin, packed) && begin + packed <= cd_offset, bad, "the data of '", name, "' (", packed,
                 " bytes at ", begin, ") lies outside the file");
    if (method == 0) {
      LOWBIT_CHECK(packed == size, bad, "'", name, "' is stored with ", packed, " bytes but says ", size);
      LOWBIT_CHECK(Crc32(data.data() + begin, packed) == crc, bad, "the CRC-32 of '", name,
                   "' does not match its bytes (the file was changed or damaged)");
    } else {
      compressed.push_back({name, crc, size});
    }
    at += 46 + uint64_t{name_len} + extra_len + comment_len;
  }
  if (compressed.empty()) return;
  // Compressed entries (LibTorch deflates its TorchScript code): unpacked by
  // LibTorch's own reader, then checked against their CRC-32. Its record
  // names leave out the archive's top folder.
  try {
    std::istringstream stream(data);
    caffe2::serialize::PyTorchStreamReader reader(&stream);
    for (const Entry& e : compressed) {
      const size_t slash = e.name.find('/');
      LOWBIT_CHECK(slash != std::string::npos, bad, "entry '", e.name, "' is outside the archive's folder");
      auto [bytes, n] = reader.getRecord(e.name.substr(slash + 1));
      LOWBIT_CHECK(n == e.size && Crc32(static_cast<const char*>(bytes.get()), n) == e.crc, bad, "the CRC-32 of '",
                   e.name, "' does not match its bytes (the file was changed or damaged)");
    }
  } catch (const c10::Error& e) {
    if (e.msg().find(path) != std::string::npos) throw;
    LOWBIT_CHECK(false, bad, e.msg().substr(0, e.msg().find('\n')));
  } catch (const std::exception& e) {
    LOWBIT_CHECK(false, bad, ::lowbit::base::Message(e));
  }
}

}  // namespace

void CheckZipFile(const std::string& path, const std::string& who) {
  CheckZipBytes(ReadWholeFile(path, who), path, who);
}

void LoadArchive(torch::serialize::InputArchive& archive, const std::string& path, const std::string& who) {
  // One read of the file: the bytes that were checked are the bytes loaded.
  std::string data = ReadWholeFile(path, who);
  CheckZipBytes(data, path, who);
  std::istringstream bytes(std::move(data));
  try {
    archive.load_from(bytes);
  } catch (const c10::Error& e) {
    LOWBIT_CHECK(false, who, ": ", path,
                 " is not a readable LibTorch archive: ", e.msg().substr(0, e.msg().find('\n')));
  } catch (const std::exception& e) {
    LOWBIT_CHECK(false, who, ": ", path, " is not a readable LibTorch archive: ", ::lowbit::base::Message(e));
  }
}

}  // namespace lowbit::kernels
