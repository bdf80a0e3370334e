#include "examples/gpt/text_data.h"

#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lowbit/base/error.h"

namespace lowbit::examples::gpt {
namespace {

// SplitMix64's finaliser: a bijection on 64 bits that mixes every input bit
// into every output bit.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<CharCorpus> MakeCharCorpus(const std::string& text, double val_fraction,
                                          const std::string& extra_vocab) {
  if (text.empty()) return absl::InvalidArgumentError("gpt: the corpus is empty");
  if (!(val_fraction > 0 && val_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("gpt: the validation fraction must be in (0, 1), got ", val_fraction));
  }
  CharCorpus c;
  std::array<bool, 256> seen{};
  for (unsigned char ch : text) seen[ch] = true;
  for (unsigned char ch : extra_vocab) seen[ch] = true;
  c.ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    if (!seen[b]) continue;
    c.ids[b] = static_cast<int16_t>(c.vocab.size());
    c.vocab.push_back(static_cast<uint8_t>(b));
  }
  const auto n = static_cast<int64_t>(text.size());
  at::Tensor all = torch::empty({n}, torch::kLong);
  int64_t* out = all.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) out[i] = c.ids[static_cast<unsigned char>(text[i])];
  const auto split = static_cast<int64_t>(std::ceil(static_cast<double>(n) * (1.0 - val_fraction)));
  c.train = all.narrow(0, 0, split);
  c.val = all.narrow(0, split, n - split);
  return c;
}

namespace {

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("gpt: cannot read ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<CharCorpus> LoadCharCorpus(const std::string& path, double val_fraction,
                                          const std::vector<std::string>& vocab_paths) {
  std::string extra;
  for (const std::string& v : vocab_paths) {
    absl::StatusOr<std::string> text = ReadWhole(v);
    if (!text.ok()) return absl::NotFoundError(absl::StrCat(text.status().message(), " (--vocab_corpus)"));
    extra += *text;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "gpt: corpus ", path, " does not exist: install the Debian packages bible-kjv and bible-kjv-text "
        "(apt-get install bible-kjv bible-kjv-text) and rebuild, which writes it, or pass --corpus with a text file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat("gpt: cannot read corpus ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<CharCorpus> corpus = MakeCharCorpus(buffer.str(), val_fraction, extra);
  if (!corpus.ok()) return absl::InvalidArgumentError(absl::StrCat(corpus.status().message(), " (", path, ")"));
  return corpus;
}

at::Tensor Encode(const CharCorpus& corpus, const std::string& text) {
  at::Tensor ids = torch::empty({static_cast<int64_t>(text.size())}, torch::kLong);
  int64_t* out = ids.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) {
    const int16_t id = corpus.ids[static_cast<unsigned char>(text[i])];
    LOWBIT_CHECK(id >= 0, "gpt: byte ", static_cast<int>(static_cast<unsigned char>(text[i])), " ('", text[i],
                "') at position ", i, " is not in the corpus' vocabulary");
    out[i] = id;
  }
  return ids;
}

std::string Decode(const CharCorpus& corpus, const at::Tensor& ids) {
  const at::Tensor c = ids.to(torch::kLong).contiguous();
  std::string text;
  text.reserve(static_cast<size_t>(c.numel()));
  const int64_t* p = c.data_ptr<int64_t>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    LOWBIT_CHECK(p[i] >= 0 && p[i] < corpus.size(), "gpt: token id ", p[i], " is outside the vocabulary of ",
                corpus.size());
    text.push_back(static_cast<char>(corpus.vocab[static_cast<size_t>(p[i])]));
  }
  return text;
}

at::Tensor TrainWindows(const CharCorpus& corpus, int64_t batch, int64_t block, uint64_t seed, int64_t rank,
                        int64_t step) {
  const int64_t n = corpus.train.numel(), starts = n - block;
  LOWBIT_CHECK(starts >= 1, "gpt: the training text (", n, " tokens) is shorter than one window of ", block + 1);
  at::Tensor offsets = torch::empty({batch}, torch::kLong);
  int64_t* o = offsets.data_ptr<int64_t>();
  const uint64_t key = Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(rank)) ^ static_cast<uint64_t>(step));
  for (int64_t i = 0; i < batch; ++i) {
    o[i] = static_cast<int64_t>(Mix(key ^ Mix(static_cast<uint64_t>(i))) % static_cast<uint64_t>(starts));
  }
  const at::Tensor index = offsets.unsqueeze(1) + torch::arange(block + 1, torch::kLong).unsqueeze(0);
  return corpus.train.index({index});
}

at::Tensor ValWindows(const CharCorpus& corpus, int64_t count, int64_t block) {
  const int64_t n = corpus.val.numel();
  LOWBIT_CHECK(n >= block + 1, "gpt: --block_size ", block, " needs ", block + 1,
              " tokens of validation text, and the validation split has ", n);
  LOWBIT_CHECK(count >= 1, "gpt: --val_windows must be >= 1, got ", count);
  const int64_t span = n - (block + 1);
  at::Tensor offsets = torch::empty({count}, torch::kLong);
  int64_t* o = offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) o[i] = count == 1 ? 0 : span * i / (count - 1);
  const at::Tensor index = offsets.unsqueeze(1) + torch::arange(block + 1, torch::kLong).unsqueeze(0);
  return corpus.val.index({index});
}

}  // namespace lowbit::examples::gpt
