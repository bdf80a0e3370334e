// Chunked top-k: the selection SparseLoCo and DeMo send. A flat tensor is cut
// into chunks of `chunk` elements (the last may be shorter) and each chunk
// keeps its `k` entries largest in magnitude (a shorter last chunk keeps
// ceil(k * length / chunk), at least 1). The count per chunk depends only on
// the sizes, so every rank's selection has the same length and a position
// travels as its offset within its chunk (16 bits: chunk <= 32768).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace lowbit::compress {

struct ChunkedSelection {
  at::Tensor index;   // int64 positions in the flat tensor, chunk by chunk
  at::Tensor values;  // the tensor at those positions
};

// Entries kept from a tensor of `numel` elements.
int64_t ChunkedTopKCount(int64_t numel, int64_t chunk, int64_t k);

// Throws, naming the value, unless 1 <= chunk <= 32768 and 1 <= k <= chunk.
void CheckChunkedTopK(const char* who, int64_t chunk, int64_t k);

ChunkedSelection ChunkedTopK(const at::Tensor& flat, int64_t chunk, int64_t k);

// The first position of the chunk each kept entry lies in (int64, length
// ChunkedTopKCount): index = ChunkBase + offset within the chunk.
at::Tensor ChunkBase(int64_t numel, int64_t chunk, int64_t k, const at::TensorOptions& options);

}  // namespace lowbit::compress
