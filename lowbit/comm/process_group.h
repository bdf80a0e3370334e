// ProcessGroup: the collectives lowbit's data-parallel training runs on.
//
// Implementations: MpiProcessGroup (CPU tensors, under mpirun / srun),
// GlooProcessGroup (CPU tensors, LibTorch's c10d Gloo, under torchrun),
// NcclProcessGroup (CUDA tensors) and LocalProcessGroup (one process). Build one
// with lowbit::launch::InitProcessGroup(), which reads the launcher's environment.
//
//   auto pg = lowbit::launch::InitProcessGroup().value();
//   at::Tensor t = at::ones({4});
//   pg->AllReduce(t, lowbit::comm::ReduceOp::kSum)->Wait();   // t == world size
//
// Every collective must be called by all ranks in the same order with matching
// sizes and dtypes. Tensors must be contiguous; they are treated as flat arrays.
// Supported dtypes: float32, float64, float16, bfloat16, uint8, int8, int32, int64.
// A collective that does not finish within the group's timeout makes Wait() throw
// an error naming it, so a dead or hung peer never hangs the others.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <absl/status/statusor.h>

#include "lowbit/comm/work.h"

namespace lowbit::comm {

enum class ReduceOp { kSum, kAvg, kMin, kMax };
std::string ToString(ReduceOp op);

// Where the ranks run, for the MPI group's choice of algorithms (one host:
// shared memory, where copies are cheap; many hosts: a network, where bytes on
// the wire count). kDetect asks MPI which ranks share memory; the others
// override it, e.g. for containers on one machine that talk over a network.
enum class Hosts { kDetect, kOne, kMany };
// "detect", "one", "many"; ParseHosts is its inverse and names the value it refused.
std::string ToString(Hosts hosts);
absl::StatusOr<Hosts> ParseHosts(const std::string& name);

struct ProcessGroupOptions {
  // How long Wait() waits for one collective before it throws.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  Hosts hosts = Hosts::kDetect;
};

// Payload bytes this rank handed to and received from its peers, counted by
// each collective's meaning (an allreduce of B bytes counts B sent and B
// received; a ring algorithm moves about 2(P-1)/P * B on the wire). A world of
// one rank counts collectives but no bytes.
struct TrafficCounters {
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int64_t collectives = 0;
};

class ProcessGroup;

// The ranks grouped by host: `local` holds the ranks on this rank's host,
// `cross` the ranks with this rank's local rank, one on each host.
struct HostGroups {
  std::shared_ptr<ProcessGroup> local, cross;
};

// Splits `pg` by host: hosts are the sets of ranks that share memory (MPI's
// node), or with ranks_per_host > 0 consecutive blocks of that many ranks.
// Every host must hold the same number of ranks. The groups' collectives run
// in the order they are called, with `pg`'s, and their bytes count in
// `pg`'s Traffic() as well as their own. A collective: every rank calls it.
// The MPI backend only.
HostGroups SplitByHost(const std::shared_ptr<ProcessGroup>& pg, int ranks_per_host = 0);

class ProcessGroup {
 public:
  explicit ProcessGroup(ProcessGroupOptions options) : options_(options) {}
  virtual ~ProcessGroup() = default;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  virtual std::string Backend() const = 0;
  std::chrono::milliseconds Timeout() const { return options_.timeout; }

  // In place: `tensor` becomes the reduction of every rank's `tensor`. kAvg
  // needs a floating dtype.
  std::shared_ptr<Work> AllReduce(at::Tensor tensor, ReduceOp op = ReduceOp::kSum);
  // `output` has Size() * input.numel() elements; rank i's input lands at
  // [i * n, (i + 1) * n).
  std::shared_ptr<Work> AllGather(at::Tensor output, at::Tensor input);
  // Inputs of different lengths; Result() holds Size() flat tensors, rank i's
  // input at index i.
  std::shared_ptr<Work> AllGatherV(at::Tensor input);
  // `input` has Size() * output.numel() elements; rank i gets the reduction of
  // everyone's chunk i.
  std::shared_ptr<Work> ReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op = ReduceOp::kSum);
  // Both tensors hold Size() equal chunks; chunk j of rank i's input becomes
  // chunk i of rank j's output.
  std::shared_ptr<Work> AllToAll(at::Tensor output, at::Tensor input);
  // In place: every rank's `tensor` becomes root's.
  std::shared_ptr<Work> Broadcast(at::Tensor tensor, int root = 0);
  std::shared_ptr<Work> Barrier();

  TrafficCounters Traffic() const;

 protected:
  friend HostGroups SplitByHost(const std::shared_ptr<ProcessGroup>& pg, int ranks_per_host);
  virtual HostGroups DoSplitByHost(int ranks_per_host);
  virtual std::shared_ptr<Work> DoAllReduce(at::Tensor tensor, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> DoAllGather(at::Tensor output, at::Tensor input) = 0;
  virtual std::shared_ptr<Work> DoAllGatherV(at::Tensor input) = 0;
  virtual std::shared_ptr<Work> DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> DoAllToAll(at::Tensor output, at::Tensor input) = 0;
  virtual std::shared_ptr<Work> DoBroadcast(at::Tensor tensor, int root) = 0;
  virtual std::shared_ptr<Work> DoBarrier() = 0;

  // "lowbit <backend> <op> #<seq> (<dtype>, <n> elements) on rank r of P":
  // how errors and timeouts name a collective.
  std::string Describe(const char* op, const at::Tensor& t) const;
  // Which device type this backend takes (CPU for MPI and Gloo).
  virtual bool AcceptsDevice(const at::Tensor& t) const = 0;

  ProcessGroupOptions options_;

 private:
  void CheckTensor(const char* op, const char* name, const at::Tensor& t) const;
  void Count(int64_t sent, int64_t received);

  std::atomic<int64_t> bytes_sent_{0};
  std::atomic<int64_t> bytes_received_{0};
  std::atomic<int64_t> collectives_{0};
  std::shared_ptr<ProcessGroup> traffic_parent_;  // a group SplitByHost made counts into its parent too
};

}  // namespace lowbit::comm
