// Files read from disk are untrusted. Each reader gets a valid file cut at
// many lengths and with seeded byte changes (1,000 cases per format, the same
// every run): each case must be an error that names the file, or, where the
// change missed every byte that matters, load exactly what the valid file
// holds. Never a crash, a hang or an allocation sized by a damaged header:
// the address sanitizer build (scripts/sanitize.sh) runs this test too.
//
// Formats: Fashion-MNIST's gzipped IDX files (the gzip stream damaged, and
// the IDX bytes damaged and then gzipped), the GPT corpus, Convert's
// quantized model, the N:M export, a ComPEFT task vector and a comm hook's
// saved state. Checkpoint files have their own loop in
// tests/train/checkpoint_test.cpp (every truncation and 1,000 byte changes).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "examples/common/idx_reader.h"
#include "examples/gpt/text_data.h"
#include "lowbit/comm/comm_hook.h"
#include "lowbit/compress/compeft.h"
#include "lowbit/kernels/archive_file.h"
#include "lowbit/qat/convert.h"
#include "lowbit/qat/prepare.h"
#include "lowbit/sparsity/nm_export.h"
#include "lowbit/sparsity/sparsifier.h"

namespace lowbit {
namespace {

constexpr int kCases = 1000;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Case i of kCases: the first quarter cut `valid` at lengths spread over
// [0, size); the rest change bytes: one byte, a few bytes, four bytes set to
// 0xff (a huge length or count), or a cut plus a change.
std::string Mutate(const std::string& valid, int i, std::mt19937_64& rng) {
  const size_t size = valid.size();
  if (i < kCases / 4) return valid.substr(0, size * static_cast<size_t>(i) / (kCases / 4));
  std::string b = valid;
  switch (i % 4) {
    case 0:
      b[rng() % size] ^= static_cast<char>(1 + rng() % 255);
      break;
    case 1:
      for (int k = 1 + static_cast<int>(rng() % 8); k > 0; --k) b[rng() % size] = static_cast<char>(rng());
      break;
    case 2: {
      const size_t at = rng() % (size - 3);
      for (size_t k = 0; k < 4; ++k) b[at + k] = static_cast<char>(0xff);
      break;
    }
    default:
      b.resize(size / 2 + rng() % (size / 2));
      b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
  }
  return b;
}

struct Tally {
  int errors = 0, same = 0, different = 0;
};

// Runs the kCases mutations of the file at `path` through `load`, which
// throws or returns. `same` says whether what it loaded equals what the
// valid file holds; `different_allowed` whether a file whose every byte is
// content may load as other content (a text corpus, IDX pixels).
// With `wrap`, the mutations are of `unwrapped` (the file is wrap(unwrapped)).
Tally Fuzz(const std::string& format, const std::string& path, const std::function<void(const std::string&)>& load,
           const std::function<bool()>& same, bool different_allowed, uint64_t seed,
           const std::function<std::string(const std::string&)>& wrap = nullptr, const std::string& unwrapped = "") {
  const std::string valid = wrap ? unwrapped : ReadBytes(path);
  if (wrap) WriteBytes(path, wrap(valid));
  EXPECT_GT(valid.size(), 16u) << format;
  load(path);
  EXPECT_TRUE(same()) << format << ": the valid file does not load as itself";
  std::mt19937_64 rng(seed);
  Tally t;
  for (int i = 0; i < kCases; ++i) {
    const std::string damaged = Mutate(valid, i, rng);
    WriteBytes(path, wrap ? wrap(damaged) : damaged);
    try {
      load(path);
    } catch (const std::exception& e) {
      ++t.errors;
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos)
          << format << " case " << i << ": the error does not name " << path << ": " << what.substr(0, 300);
      continue;
    }
    if (same()) {
      ++t.same;
    } else {
      ++t.different;
      if (!different_allowed) WriteBytes(path + ".case" + std::to_string(i), damaged);
      EXPECT_TRUE(different_allowed) << format << " case " << i << " loaded other content without an error";
    }
  }
  WriteBytes(path, wrap ? wrap(valid) : valid);
  std::cout << format << ": " << kCases << " damaged files, " << t.errors << " refused, " << t.same
            << " loaded unchanged (the change missed what is read), " << t.different << " loaded as other content"
            << std::endl;
  return t;
}

std::string Gzip(const std::string& raw) {
  uLongf size = compressBound(raw.size()) + 64;
  std::string out(size, '\0');
  // A gzip stream (windowBits 15 + 16), as gzopen reads.
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// A small Fashion-MNIST directory: 64 training and 16 test images.
struct IdxFiles {
  std::string dir, train_images, train_labels_raw, train_images_raw;
  IdxFiles() {
    dir = ::testing::TempDir() + "/lowbit_fuzz_idx";
    std::filesystem::create_directories(dir);
    for (const auto& [prefix, n] : std::vector<std::pair<std::string, int>>{{"train", 64}, {"t10k", 16}}) {
      std::string images = BigEndian32(0x0803) + BigEndian32(n) + BigEndian32(28) + BigEndian32(28);
      std::string labels = BigEndian32(0x0801) + BigEndian32(n);
      for (int k = 0; k < n * 28 * 28; ++k) images.push_back(static_cast<char>((k * 37) % 256));
      for (int k = 0; k < n; ++k) labels.push_back(static_cast<char>(k % 10));
      WriteBytes(dir + "/" + prefix + "-images-idx3-ubyte.gz", Gzip(images));
      WriteBytes(dir + "/" + prefix + "-labels-idx1-ubyte.gz", Gzip(labels));
      if (prefix == "train") {
        train_images_raw = images;
        train_labels_raw = labels;
      }
    }
    train_images = dir + "/train-images-idx3-ubyte.gz";
  }
};

TEST(FileFuzz, FashionMnistIdx) {
  IdxFiles files;
  at::Tensor want, got;
  auto load = [&](const std::string&) {
    absl::StatusOr<examples::FashionMnist> d = examples::LoadFashionMnist(files.dir);
    if (!d.ok()) throw std::runtime_error(std::string(d.status().message()));
    got = d->train.images;
  };
  load("");
  want = got.clone();
  auto same = [&] { return got.sizes() == want.sizes() && torch::equal(got, want); };
  // The gzip stream damaged: its CRC-32 and length catch what the header does not.
  const Tally gz = Fuzz("idx (gzip bytes)", files.train_images, load, same, false, 11);
  EXPECT_GT(gz.errors, kCases / 2);
  // The IDX bytes damaged, then gzipped: a damaged header (huge or zero
  // dimensions, wrong magic) is refused; damaged pixels are other pixels.
  const Tally raw =
      Fuzz("idx (unpacked bytes)", files.train_images, load, same, true, 12, Gzip, files.train_images_raw);
  EXPECT_GT(raw.errors, kCases / 4);
  const std::string labels = files.dir + "/train-labels-idx1-ubyte.gz";
  auto load_labels = [&](const std::string& p) { load(p); };
  Fuzz(
      "idx labels (unpacked bytes)", labels, load_labels, [] { return true; }, true, 13, Gzip, files.train_labels_raw);
}

TEST(FileFuzz, GptCorpus) {
  const std::string path = ::testing::TempDir() + "/lowbit_fuzz_corpus.txt";
  std::string text;
  for (int k = 0; k < 40; ++k) text += "In the beginning God created the heaven and the earth. ";
  WriteBytes(path, text);
  std::string got;
  auto load = [&](const std::string& p) {
    absl::StatusOr<examples::gpt::CharCorpus> c = examples::gpt::LoadCharCorpus(p, 0.1);
    if (!c.ok()) throw std::runtime_error(std::string(c.status().message()));
    got = examples::gpt::Decode(*c, torch::cat({c->train, c->val}));
  };
  // Every byte of a text is content: damage is other text, or too short a text.
  Fuzz(
      "gpt corpus", path, load, [&] { return got == text; }, true, 21);
}

TEST(FileFuzz, QuantizedModel) {
  const std::string path = ::testing::TempDir() + "/lowbit_fuzz_model.lbq";
  auto make = [] {
    torch::manual_seed(3);
    torch::nn::Sequential m(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
    qat::Prepare(*m, qat::PresetConfig("w4a8"));
    qat::Calibrate(*m, [&] { m->forward(torch::randn({8, 16}, at::detail::createCPUGenerator(1))); });
    m->eval();
    qat::Convert(*m);
    return m;
  };
  torch::nn::Sequential model = make();
  for (auto& b : model->named_buffers()) b.value().add_(0);  // as trained
  qat::SaveQuantized(*model, path);
  const at::Tensor x = torch::randn({4, 16}, at::detail::createCPUGenerator(2));
  const at::Tensor want = model->forward(x);
  // A fresh model each time: a load that fails part-way leaves a model half loaded.
  torch::nn::Sequential fresh{nullptr};
  auto load = [&](const std::string& p) {
    fresh = make();
    qat::LoadQuantized(*fresh, p);
  };
  Fuzz(
      "quantized model (Convert)", path, load, [&] { return torch::equal(fresh->forward(x), want); }, false, 31);
}

TEST(FileFuzz, NmExport) {
  const std::string path = ::testing::TempDir() + "/lowbit_fuzz_export.nm";
  torch::manual_seed(4);
  torch::nn::Sequential model(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 8));
  sparsity::Sparsifier s(*model, sparsity::SparseConfig{}, {});
  torch::optim::SGD opt(model->parameters(), 0.1);
  opt.zero_grad();
  model->forward(torch::randn({4, 16})).sum().backward();
  s.Step(opt);
  sparsity::ExportNm(s, path);
  std::map<std::string, at::Tensor> got;
  auto load = [&](const std::string& p) { got = sparsity::ImportNm(p); };
  auto same = [&] {
    if (got.size() != s.LayerNames().size()) return false;
    for (const std::string& layer : s.LayerNames()) {
      if (!got.count(layer) || !torch::equal(got.at(layer), s.Weight(layer).detach())) return false;
    }
    return true;
  };
  Fuzz("N:M export", path, load, same, false, 41);
}

TEST(FileFuzz, ComPeftTaskVector) {
  const std::string path = ::testing::TempDir() + "/lowbit_fuzz_delta.lbtv";
  torch::manual_seed(5);
  torch::nn::Linear base(32, 16), tuned(32, 16);
  compress::ComPeftOptions o;
  o.density = 0.2;
  compress::SaveTaskVector(*tuned, *base, o, path);
  torch::nn::Linear target(32, 16);
  auto reset = [&] {
    torch::NoGradGuard g;
    target->weight.copy_(base->weight);
    target->bias.copy_(base->bias);
  };
  reset();
  compress::ApplyTaskVector(*target, path);
  const at::Tensor want = target->weight.detach().clone();
  auto load = [&](const std::string& p) {
    reset();
    compress::ApplyTaskVector(*target, p);
  };
  Fuzz(
      "ComPEFT task vector", path, load, [&] { return torch::equal(target->weight, want); }, false, 51);
}

// A comm hook's saved state (residuals, warm starts) in a LibTorch archive
// file, read the way lowbit reads archives from disk (kernels::LoadArchive)
// and then by ReadHookState, which takes an archive: the file's name in its
// errors is this test's to add.
TEST(FileFuzz, HookState) {
  const std::string path = ::testing::TempDir() + "/lowbit_fuzz_hook_state.pt";
  comm::HookState state = {{"residual/0", torch::randn({64})}, {"q/fc1.weight", torch::randn({8, 4})}};
  {
    torch::serialize::OutputArchive a;
    comm::WriteHookState(a, state, "hook_");
    a.save_to(path);
  }
  comm::HookState got;
  auto load = [&](const std::string& p) {
    try {
      torch::serialize::InputArchive a;
      kernels::LoadArchive(a, p, "hook state");
      got = comm::ReadHookState(a, "hook_");
    } catch (const c10::Error& e) {
      throw std::runtime_error(p + ": " + e.msg());
    }
  };
  auto same = [&] {
    if (got.size() != state.size()) return false;
    for (size_t k = 0; k < state.size(); ++k) {
      if (got[k].first != state[k].first || !torch::equal(got[k].second, state[k].second)) return false;
    }
    return true;
  };
  Fuzz("hook state", path, load, same, false, 61);
}

}  // namespace
}  // namespace lowbit
