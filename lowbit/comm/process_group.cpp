#include "lowbit/comm/process_group.h"

#include <ATen/ATen.h>
#include <absl/strings/str_cat.h>

#include "lowbit/base/error.h"

namespace lowbit::comm {

std::string ToString(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

std::string ToString(Hosts hosts) {
  switch (hosts) {
    case Hosts::kDetect: return "detect";
    case Hosts::kOne: return "one";
    case Hosts::kMany: return "many";
  }
  return "unknown";
}

absl::StatusOr<Hosts> ParseHosts(const std::string& name) {
  for (Hosts h : {Hosts::kDetect, Hosts::kOne, Hosts::kMany}) {
    if (name == ToString(h)) return h;
  }
  return absl::InvalidArgumentError(absl::StrCat("hosts must be detect, one or many, got '", name, "'"));
}

namespace {

bool IsSupportedDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: case at::kDouble: case at::kHalf: case at::kBFloat16:
    case at::kByte: case at::kChar: case at::kInt: case at::kLong:
      return true;
    default:
      return false;
  }
}

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace

void ProcessGroup::CheckTensor(const char* op, const char* name, const at::Tensor& t) const {
  LOWBIT_CHECK(t.defined(), op, ": `", name, "` is an undefined tensor");
  LOWBIT_CHECK(t.is_contiguous(), op, ": `", name, "` must be contiguous, got sizes ", t.sizes(), " and strides ",
               t.strides());
  LOWBIT_CHECK(IsSupportedDtype(t.scalar_type()), op, ": `", name, "` has unsupported dtype ", t.scalar_type(),
               " (supported: float32, float64, float16, bfloat16, uint8, int8, int32, int64)");
  LOWBIT_CHECK(AcceptsDevice(t), op, ": the ", Backend(), " process group cannot take `", name, "` on device ",
               t.device());
}

void ProcessGroup::Count(int64_t sent, int64_t received) {
  ++collectives_;
  if (Size() == 1) return;  // a world of one sends nothing
  bytes_sent_ += sent;
  bytes_received_ += received;
  if (traffic_parent_) {
    traffic_parent_->bytes_sent_ += sent;
    traffic_parent_->bytes_received_ += received;
  }
}

HostGroups SplitByHost(const std::shared_ptr<ProcessGroup>& pg, int ranks_per_host) {
  LOWBIT_CHECK(pg != nullptr, "SplitByHost: process group is null");
  LOWBIT_CHECK(ranks_per_host >= 0, "SplitByHost: ranks_per_host must be >= 0 (0: detect), got ", ranks_per_host);
  HostGroups groups = pg->DoSplitByHost(ranks_per_host);
  groups.local->traffic_parent_ = pg;
  groups.cross->traffic_parent_ = pg;
  return groups;
}

HostGroups ProcessGroup::DoSplitByHost(int ranks_per_host) {
  LOWBIT_CHECK(false, "SplitByHost: the ", Backend(),
               " process group cannot be split by host; the two-level "
               "exchange needs the MPI backend");
}

TrafficCounters ProcessGroup::Traffic() const {
  return TrafficCounters{bytes_sent_.load(), bytes_received_.load(), collectives_.load()};
}

std::string ProcessGroup::Describe(const char* op, const at::Tensor& t) const {
  return c10::str("lowbit ", Backend(), " ", op, " #", collectives_.load(), " (",
                  t.defined() ? c10::toString(t.scalar_type()) : "none", ", ",
                  t.defined() ? t.numel() : 0, " elements) on rank ", Rank(), " of ", Size());
}

std::shared_ptr<Work> ProcessGroup::AllReduce(at::Tensor tensor, ReduceOp op) {
  CheckTensor("AllReduce", "tensor", tensor);
  LOWBIT_CHECK(op != ReduceOp::kAvg || at::isFloatingType(tensor.scalar_type()),
               "AllReduce: op avg needs a floating dtype, got ", tensor.scalar_type());
  Count(Bytes(tensor), Bytes(tensor));
  return DoAllReduce(std::move(tensor), op);
}

std::shared_ptr<Work> ProcessGroup::AllGather(at::Tensor output, at::Tensor input) {
  CheckTensor("AllGather", "input", input);
  CheckTensor("AllGather", "output", output);
  LOWBIT_CHECK(output.scalar_type() == input.scalar_type(), "AllGather: output dtype ", output.scalar_type(),
               " differs from input dtype ", input.scalar_type());
  LOWBIT_CHECK(output.numel() == input.numel() * Size(), "AllGather: output has ", output.numel(),
               " elements, expected world size ", Size(), " x input ", input.numel());
  Count(Bytes(input), Bytes(input) * (Size() - 1));
  return DoAllGather(std::move(output), std::move(input));
}

std::shared_ptr<Work> ProcessGroup::AllGatherV(at::Tensor input) {
  CheckTensor("AllGatherV", "input", input);
  // The peers' lengths are unknown until the exchange: received bytes are
  // counted as if every peer sent as much as this rank.
  Count(Bytes(input), Bytes(input) * (Size() - 1));
  return DoAllGatherV(std::move(input));
}

std::shared_ptr<Work> ProcessGroup::ReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) {
  CheckTensor("ReduceScatter", "input", input);
  CheckTensor("ReduceScatter", "output", output);
  LOWBIT_CHECK(output.scalar_type() == input.scalar_type(), "ReduceScatter: output dtype ", output.scalar_type(),
               " differs from input dtype ", input.scalar_type());
  LOWBIT_CHECK(input.numel() == output.numel() * Size(), "ReduceScatter: input has ", input.numel(),
               " elements, expected world size ", Size(), " x output ", output.numel());
  LOWBIT_CHECK(op != ReduceOp::kAvg || at::isFloatingType(input.scalar_type()),
               "ReduceScatter: op avg needs a floating dtype, got ", input.scalar_type());
  Count(Bytes(output) * (Size() - 1), Bytes(output) * (Size() - 1));
  return DoReduceScatter(std::move(output), std::move(input), op);
}

std::shared_ptr<Work> ProcessGroup::AllToAll(at::Tensor output, at::Tensor input) {
  CheckTensor("AllToAll", "input", input);
  CheckTensor("AllToAll", "output", output);
  LOWBIT_CHECK(output.scalar_type() == input.scalar_type(), "AllToAll: output dtype ", output.scalar_type(),
               " differs from input dtype ", input.scalar_type());
  LOWBIT_CHECK(input.numel() == output.numel() && input.numel() % Size() == 0, "AllToAll: input (", input.numel(),
               ") and output (", output.numel(),
               ") must have the same number of elements, divisible by the world size ", Size());
  const int64_t chunk = Bytes(input) / Size();
  Count(chunk * (Size() - 1), chunk * (Size() - 1));
  return DoAllToAll(std::move(output), std::move(input));
}

std::shared_ptr<Work> ProcessGroup::Broadcast(at::Tensor tensor, int root) {
  CheckTensor("Broadcast", "tensor", tensor);
  LOWBIT_CHECK(root >= 0 && root < Size(), "Broadcast: root must be in [0, ", Size(), "), got ", root);
  Count(Rank() == root ? Bytes(tensor) : 0, Rank() == root ? 0 : Bytes(tensor));
  return DoBroadcast(std::move(tensor), root);
}

std::shared_ptr<Work> ProcessGroup::Barrier() {
  Count(0, 0);
  return DoBarrier();
}

}  // namespace lowbit::comm
