// ShardIndices: which examples of an in-memory dataset this rank trains on,
// as PyTorch's DistributedSampler chooses them. Every rank shuffles the same
// way (a permutation drawn from seed + epoch, so each epoch differs and the
// same on all ranks), the order is padded by repeating its start until it
// divides by the world size (or cut, with drop_last), and rank r takes the
// positions r, r + world, r + 2 world, ... So every rank gets the same
// number of examples, and together the ranks cover the dataset each epoch.
//
//   lowbit::train::ShardOptions shard;                      // shuffle, seed 0
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     at::Tensor mine = lowbit::train::ShardIndices(images.size(0), *pg, epoch, shard);
//     for (int64_t first = 0; first + batch <= mine.numel(); first += batch) {
//       at::Tensor idx = mine.narrow(0, first, batch);
//       ... model->forward(images.index_select(0, idx)) ...
//     }
//   }
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lowbit::comm {
class ProcessGroup;
}  // namespace lowbit::comm

namespace lowbit::train {

struct ShardOptions {
  // Permute the examples each epoch (false: in order).
  bool shuffle = true;
  // The permutation of epoch e is drawn from seed + e (same on every rank).
  uint64_t seed = 0;
  // Cut the tail that does not divide by the world size, instead of padding
  // with repeated examples.
  bool drop_last = false;
};

// This rank's example indices (int64, 1-D) for `epoch`: ceil(size / world)
// of them (floor with drop_last). Throws, naming the value, on size < 0,
// epoch < 0, a rank outside [0, world), or no examples for a rank.
at::Tensor ShardIndices(int64_t size, int rank, int world, int64_t epoch, const ShardOptions& options = {});
// The same for the process group's rank and size.
at::Tensor ShardIndices(int64_t size, const comm::ProcessGroup& pg, int64_t epoch, const ShardOptions& options = {});

}  // namespace lowbit::train
