// Character-level text for the GPT example: a vocabulary of the bytes that
// occur in the corpus (sorted, so the same file always gives the same ids),
// a fixed split (the first 90% trains, the last 10% validates), training
// windows drawn by a counter-based generator keyed by (seed, rank, step), so
// a run is reproducible and resumes exactly from its step counter alone, and
// a fixed set of validation windows.
//
// The corpus is the King James Bible from Debian's bible-kjv-text, written by
// the build to <build>/data/bible-kjv.txt with bible-kjv's `bible` program.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace lowbit::examples::gpt {

struct CharCorpus {
  std::vector<uint8_t> vocab;        // id -> byte
  std::array<int16_t, 256> ids{};    // byte -> id, -1 where the byte never occurs
  at::Tensor train, val;             // int64 [N] token ids
  int64_t size() const { return static_cast<int64_t>(vocab.size()); }
};

// The corpus in `text`, split at the first index >= (1 - val_fraction) of
// its length. InvalidArgument on an empty text or a fraction outside (0, 1).
// The vocabulary is the bytes of `text` and of `extra_vocab` (so two corpora
// can share one: fine-tuning a model from one to the other).
absl::StatusOr<CharCorpus> MakeCharCorpus(const std::string& text, double val_fraction = 0.1,
                                          const std::string& extra_vocab = "");
// NotFound naming the path and the Debian packages when the file is missing;
// the bytes of the files in `vocab_paths` join the vocabulary.
absl::StatusOr<CharCorpus> LoadCharCorpus(const std::string& path, double val_fraction = 0.1,
                                          const std::vector<std::string>& vocab_paths = {});

// Token ids of `text`; throws naming the first byte not in the vocabulary.
at::Tensor Encode(const CharCorpus& corpus, const std::string& text);
std::string Decode(const CharCorpus& corpus, const at::Tensor& ids);

// `batch` windows of block + 1 tokens from the training split, int64
// [batch, block + 1]: inputs are [:, :-1], targets [:, 1:]. Window i starts
// at a position that depends only on (seed, rank, step, i).
at::Tensor TrainWindows(const CharCorpus& corpus, int64_t batch, int64_t block, uint64_t seed, int64_t rank,
                        int64_t step);

// `count` windows of block + 1 tokens spread evenly over the validation
// split, the same for every run; throws naming both lengths when the
// validation text is shorter than one window.
at::Tensor ValWindows(const CharCorpus& corpus, int64_t count, int64_t block);

}  // namespace lowbit::examples::gpt
