#include "lowbit/sparsity/nm_export.h"

#include <torch/serialize.h>

#include "lowbit/base/error.h"
#include "lowbit/kernels/archive_file.h"
#include "lowbit/kernels/sparse.h"

namespace lowbit::sparsity {

void ExportNm(const Sparsifier& sparsifier, const std::string& path) {
  torch::serialize::OutputArchive archive;
  archive.write("format", torch::tensor({int64_t{1}}, torch::kLong));
  torch::NoGradGuard no_grad;
  for (const std::string& name : sparsifier.LayerNames()) {
    const SparseConfig& c = sparsifier.Config(name);
    LOWBIT_CHECK(c.pattern == Pattern::kNm, "ExportNm: layer '", name, "' is not N:M sparse (", ToString(c), ")");
    const int64_t n = ScheduledN(c, sparsifier.step());
    LOWBIT_CHECK(n == c.n && PgfBeta(c, sparsifier.step()) == 0.0, "ExportNm: layer '", name,
                 "' has not reached its target yet (at step ", sparsifier.step(), ": ", n, ":", c.m, ")");
    const at::Tensor& w = sparsifier.Weight(name);
    kernels::NmCompressed packed =
        kernels::CompressNm(InputMajor(w.detach()), InputMajor(sparsifier.Mask(name)), c.n, c.m);
    archive.write(name + ".values", packed.values);
    archive.write(name + ".index", packed.index);
    archive.write(name + ".nm", torch::tensor({c.n, c.m}, torch::kLong));
    archive.write(name + ".shape", torch::tensor(w.sizes().vec(), torch::kLong));
  }
  archive.save_to(path);
}

namespace {

// A LibTorch error's first line (its message without the C++ backtrace).
std::string FirstLine(const c10::Error& e) { return e.msg().substr(0, e.msg().find('\n')); }

std::map<std::string, at::Tensor> ImportNmUnchecked(const std::string& path) {
  torch::serialize::InputArchive archive;
  kernels::LoadArchive(archive, path, "ImportNm");
  at::Tensor format;
  archive.read("format", format);
  LOWBIT_CHECK(format.numel() == 1 && format.scalar_type() == torch::kLong && format.item<int64_t>() == 1,
               "has no format 1 (this build reads format 1)");
  std::map<std::string, at::Tensor> out;
  for (const std::string& key : archive.keys()) {
    const std::string suffix = ".values";
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = key.substr(0, key.size() - suffix.size());
    at::Tensor values, index, nm, shape;
    archive.read(name + ".values", values);
    archive.read(name + ".index", index);
    archive.read(name + ".nm", nm);
    archive.read(name + ".shape", shape);
    LOWBIT_CHECK(nm.numel() == 2 && nm.scalar_type() == torch::kLong, "layer '", name, "': nm must be 2 int64s");
    LOWBIT_CHECK(shape.dim() == 1 && shape.numel() >= 2 && shape.numel() <= 8 && shape.scalar_type() == torch::kLong,
                 "layer '", name, "': shape must be 2 to 8 int64s, got ", shape.scalar_type(), shape.sizes());
    const int64_t n = nm[0].item<int64_t>(), m = nm[1].item<int64_t>();
    std::vector<int64_t> dims(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel());
    out[name] = FromInputMajor(kernels::DecompressNm(values, index, n, m), dims);
  }
  return out;
}

}  // namespace

std::map<std::string, at::Tensor> ImportNm(const std::string& path) {
  // Files on disk are untrusted: whatever is wrong, the error names the file.
  try {
    return ImportNmUnchecked(path);
  } catch (const c10::Error& e) {
    if (e.msg().find(path) != std::string::npos) throw;
    LOWBIT_CHECK(false, "ImportNm: ", path, " is not a valid N:M export: ", FirstLine(e));
  } catch (const std::exception& e) {
    LOWBIT_CHECK(false, "ImportNm: ", path, " is not a valid N:M export: ", ::lowbit::base::Message(e));
  }
}

}  // namespace lowbit::sparsity
