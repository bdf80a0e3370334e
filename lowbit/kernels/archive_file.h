// Reading LibTorch archives (torch::save's zip files) that come from disk,
// which is untrusted. LibTorch's reader checks the zip's structure but not
// the CRC-32 of what it reads, so a changed byte in a tensor loads as another
// value without an error, and some damaged files escape as exceptions that
// are not c10::Error or that do not name the file.
//
// LoadArchive first checks every entry of the zip: the end record, each
// central-directory entry against its local header, data inside the file,
// and each stored entry's CRC-32; then it hands the file to LibTorch. Every
// failure is a c10::Error that names `who` and the file. Lives in kernels
// because qat/ and sparsity/ read such files and depend on nothing higher.
#pragma once

#include <string>

namespace torch::serialize {
class InputArchive;
}  // namespace torch::serialize

#include <cstddef>
#include <cstdint>

namespace lowbit::kernels {

// The CRC-32 of zip and gzip (polynomial 0xEDB88320) of n bytes.
uint32_t Crc32(const void* data, size_t n);

// Throws (c10::Error naming `who` and `path`) unless `path` is a zip file
// whose every stored entry is whole (sizes, positions and CRC-32 agree).
// Zip64 files (over 4 GiB or 65,535 entries) are not checked here.
void CheckZipFile(const std::string& path, const std::string& who);

// CheckZipFile, then archive.load_from on the same bytes (the file is read once), with LibTorch's errors
// rethrown naming `who` and `path`.
void LoadArchive(torch::serialize::InputArchive& archive, const std::string& path, const std::string& who);

}  // namespace lowbit::kernels
