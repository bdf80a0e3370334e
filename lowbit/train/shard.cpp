#include "lowbit/train/shard.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "lowbit/base/error.h"
#include "lowbit/comm/process_group.h"

namespace lowbit::train {

at::Tensor ShardIndices(int64_t size, int rank, int world, int64_t epoch, const ShardOptions& options) {
  LOWBIT_CHECK(size >= 0, "ShardIndices: size must be >= 0, got ", size);
  LOWBIT_CHECK(world >= 1, "ShardIndices: world size must be >= 1, got ", world);
  LOWBIT_CHECK(rank >= 0 && rank < world, "ShardIndices: rank must be in [0, ", world, "), got ", rank);
  LOWBIT_CHECK(epoch >= 0, "ShardIndices: epoch must be >= 0, got ", epoch);
  const int64_t per_rank = options.drop_last ? size / world : (size + world - 1) / world;
  LOWBIT_CHECK(per_rank > 0, "ShardIndices: ", size, " examples leave none for some of the ", world, " ranks",
               options.drop_last ? " (drop_last)" : "");
  at::Tensor order;
  if (options.shuffle) {
    at::Generator gen = at::detail::createCPUGenerator(options.seed + static_cast<uint64_t>(epoch));
    order = at::randperm(size, gen, at::kLong);
  } else {
    order = at::arange(size, at::kLong);
  }
  const int64_t total = per_rank * world;
  if (total > size) {
    // Repeat the start of the order until it divides, as DistributedSampler
    // does (more than once when size < world).
    const int64_t repeats = (total + size - 1) / size;
    order = order.repeat({repeats}).narrow(0, 0, total);
  } else {
    order = order.narrow(0, 0, total);
  }
  return order.slice(0, rank, total, world).contiguous();
}

at::Tensor ShardIndices(int64_t size, const comm::ProcessGroup& pg, int64_t epoch, const ShardOptions& options) {
  return ShardIndices(size, pg.Rank(), pg.Size(), epoch, options);
}

}  // namespace lowbit::train
