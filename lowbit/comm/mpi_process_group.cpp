#include "lowbit/comm/mpi_process_group.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lowbit/base/error.h"
#include "lowbit/comm/backends.h"
#include "lowbit/comm/internal/mpi_check.h"
#include "lowbit/kernels/scale.h"

namespace lowbit::comm {
namespace {

// MPI has no 16-bit float types: lowbit sends them as 2-byte opaque elements
// and reduces them with its own operators, accumulating each pair in float.
template <typename T, typename F>
void Reduce16(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  F f;
  for (int i = 0; i < *len; ++i) b[i] = T(f(static_cast<float>(a[i]), static_cast<float>(b[i])));
}
struct SumF { float operator()(float a, float b) const { return a + b; } };
struct MinF { float operator()(float a, float b) const { return a < b ? a : b; } };
struct MaxF { float operator()(float a, float b) const { return a > b ? a : b; } };

int CheckedCount(int64_t n, const char* what) {
  LOWBIT_CHECK(n <= INT_MAX, "MPI process group: ", what, " has ", n, " elements, more than MPI's int count allows (",
               INT_MAX, ")");
  return static_cast<int>(n);
}

}  // namespace

struct MpiProcessGroup::Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool one_node = true;  // every rank of the communicator shares memory with every other
};

struct MpiProcessGroup::Worker {
  struct Task {
    std::shared_ptr<AsyncWork> work;
    std::function<void()> run;
  };

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Task> queue;
  bool stop = false;
  bool busy = false;
  bool exited = false;
  std::atomic<bool> timed_out{false};

  // Set up on the worker thread before the group is handed out.
  bool ready = false;
  std::exception_ptr init_error;
  bool we_initialised = false;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  Hosts hosts = Hosts::kDetect;  // the setting (ProcessGroupOptions::hosts)
  bool one_node = true;          // every rank shares memory with every other
  MPI_Datatype half = MPI_DATATYPE_NULL;
  MPI_Datatype bf16 = MPI_DATATYPE_NULL;
  MPI_Op half_ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};  // sum, min, max
  MPI_Op bf16_ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};

  std::thread thread;

  void Init() {
    int initialised = 0;
    LOWBIT_MPI_CHECK(MPI_Initialized(&initialised));
    int provided = MPI_THREAD_SINGLE;
    if (!initialised) {
      // OpenMPI's TCP transport sends messages above 64 KiB by rendezvous:
      // the receiver's go-ahead waits behind whatever fills the link's
      // queue. Gradient blocks up to 4 MiB go eagerly instead (measured on
      // scripts/netsim at 100 Mbit/s, 4 ranks, 3.2 MB: the ring 0.49 -> 0.41
      // s, wire bound 0.39). A value the user set is kept.
      setenv("OMPI_MCA_btl_tcp_eager_limit", "4194304", /*overwrite=*/0);
      setenv("OMPI_MCA_btl_tcp_rndv_eager_limit", "4194304", /*overwrite=*/0);
      // The worker thread waits inside MPI while the training thread computes:
      // yield the core while polling (OpenMPI only does so on its own when the
      // launcher saw more ranks than slots; one rank per host under
      // scripts/netsim then busy-polled beside backward: GPT tiny at 10
      // Gbit/s, 4 ranks on 2 cores, 0.236 -> 0.213 s per step).
      setenv("OMPI_MCA_mpi_yield_when_idle", "1", /*overwrite=*/0);
      LOWBIT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
      we_initialised = true;
    } else {
      LOWBIT_MPI_CHECK(MPI_Query_thread(&provided));
    }
    LOWBIT_CHECK(provided >= MPI_THREAD_SERIALIZED, "MPI process group: MPI provides thread level ", provided,
                 ", lowbit needs at least MPI_THREAD_SERIALIZED (", MPI_THREAD_SERIALIZED, ")");
    LOWBIT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
    LOWBIT_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    LOWBIT_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    LOWBIT_MPI_CHECK(MPI_Comm_size(comm, &size));
    MPI_Comm local = MPI_COMM_NULL;
    LOWBIT_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
    int local_size = 0;
    LOWBIT_MPI_CHECK(MPI_Comm_size(local, &local_size));
    LOWBIT_MPI_CHECK(MPI_Comm_free(&local));
    // {all local, the hosts setting, minus it}: the minimum of each says
    // whether every rank is local and whether the settings agree, which they
    // must, since they choose the algorithms every rank runs.
    int agreed[3] = {local_size == size ? 1 : 0, static_cast<int>(hosts), -static_cast<int>(hosts)};
    LOWBIT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, agreed, 3, MPI_INT, MPI_MIN, comm));
    LOWBIT_CHECK(agreed[1] == -agreed[2], "MpiProcessGroup: ProcessGroupOptions::hosts (LOWBIT_HOSTS) differs across ",
                 "ranks: this rank has '", ToString(hosts), "', the ranks' settings range from '",
                 ToString(static_cast<Hosts>(agreed[1])), "' to '", ToString(static_cast<Hosts>(-agreed[2])), "'");
    one_node = hosts == Hosts::kDetect ? agreed[0] == 1 : hosts == Hosts::kOne;
    LOWBIT_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &half));
    LOWBIT_MPI_CHECK(MPI_Type_commit(&half));
    LOWBIT_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &bf16));
    LOWBIT_MPI_CHECK(MPI_Type_commit(&bf16));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::Half, SumF>, 1, &half_ops[0]));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::Half, MinF>, 1, &half_ops[1]));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::Half, MaxF>, 1, &half_ops[2]));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::BFloat16, SumF>, 1, &bf16_ops[0]));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::BFloat16, MinF>, 1, &bf16_ops[1]));
    LOWBIT_MPI_CHECK(MPI_Op_create(&Reduce16<c10::BFloat16, MaxF>, 1, &bf16_ops[2]));
  }

  void Shutdown() {
    for (MPI_Op* op : {&half_ops[0], &half_ops[1], &half_ops[2], &bf16_ops[0], &bf16_ops[1], &bf16_ops[2]}) {
      if (*op != MPI_OP_NULL) MPI_Op_free(op);
    }
    if (half != MPI_DATATYPE_NULL) MPI_Type_free(&half);
    if (bf16 != MPI_DATATYPE_NULL) MPI_Type_free(&bf16);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
    if (we_initialised) MPI_Finalize();
  }

  void Loop() {
    try {
      Init();
    } catch (...) {
      init_error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      ready = true;
      cv.notify_all();
    }
    if (init_error) return;
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [this] { return stop || !queue.empty(); });
        if (queue.empty()) break;  // stop requested and nothing left
        task = std::move(queue.front());
        queue.pop_front();
        busy = true;
      }
      task.work->MarkStarted();
      try {
        task.run();
        task.work->MarkCompleted();
      } catch (...) {
        task.work->MarkFailed(std::current_exception());
      }
      std::lock_guard<std::mutex> lock(mu);
      busy = false;
      cv.notify_all();
    }
    Shutdown();
    std::lock_guard<std::mutex> lock(mu);
    exited = true;
    cv.notify_all();
  }

  MPI_Datatype Type(at::ScalarType t) const {
    switch (t) {
      case at::kFloat: return MPI_FLOAT;
      case at::kDouble: return MPI_DOUBLE;
      case at::kHalf: return half;
      case at::kBFloat16: return bf16;
      case at::kByte: return MPI_UINT8_T;
      case at::kChar: return MPI_INT8_T;
      case at::kInt: return MPI_INT32_T;
      case at::kLong: return MPI_INT64_T;
      default:
        LOWBIT_CHECK(false, "MPI process group: no MPI type for dtype ", t);
    }
  }

  MPI_Op Op(ReduceOp op, at::ScalarType t) const {
    const int index = op == ReduceOp::kMin ? 1 : op == ReduceOp::kMax ? 2 : 0;  // avg = sum, then scale
    if (t == at::kHalf) return half_ops[index];
    if (t == at::kBFloat16) return bf16_ops[index];
    static const MPI_Op kStandard[3] = {MPI_SUM, MPI_MIN, MPI_MAX};
    return kStandard[index];
  }
};

MpiProcessGroup::MpiProcessGroup(ProcessGroupOptions options)
    : ProcessGroup(options), worker_(std::make_shared<Worker>()) {
  worker_->hosts = options.hosts;
  std::shared_ptr<Worker> worker = worker_;
  worker_->thread = std::thread([worker] { worker->Loop(); });
  std::unique_lock<std::mutex> lock(worker_->mu);
  worker_->cv.wait(lock, [this] { return worker_->ready; });
  if (worker_->init_error) {
    lock.unlock();
    worker_->thread.join();
    std::rethrow_exception(worker_->init_error);
  }
  rank_ = worker_->rank;
  size_ = worker_->size;
  auto comm = std::make_shared<Comm>();
  comm->comm = worker_->comm;
  comm->rank = rank_;
  comm->size = size_;
  comm->one_node = worker_->one_node;
  comm_ = std::move(comm);
}

MpiProcessGroup::MpiProcessGroup(ProcessGroupOptions options, std::shared_ptr<Worker> worker,
                                 std::shared_ptr<const Comm> comm)
    : ProcessGroup(options), worker_(std::move(worker)), comm_(std::move(comm)), owns_worker_(false) {
  rank_ = comm_->rank;
  size_ = comm_->size;
}

// Note [MPI host groups]
// Split on the worker thread (MPI is called from there only): `local` by
// shared memory or by blocks of ranks_per_host, then `cross` by local rank.
// The hosts' sizes are compared first, so an uneven layout is an error on
// every rank. The communicators live until MPI_Finalize.
HostGroups MpiProcessGroup::DoSplitByHost(int ranks_per_host) {
  auto local = std::make_shared<Comm>();
  auto cross = std::make_shared<Comm>();
  std::shared_ptr<const Comm> c = comm_;
  const bool one_node = comm_->one_node;
  Enqueue(Describe("SplitByHost", at::Tensor()), {}, [c, local, cross, ranks_per_host, one_node] {
    LOWBIT_CHECK(ranks_per_host == 0 || c->size % ranks_per_host == 0, "SplitByHost: ranks_per_host (", ranks_per_host,
                 ") must divide the world size (", c->size, ")");
    if (ranks_per_host == 0) {
      LOWBIT_MPI_CHECK(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local->comm));
    } else {
      LOWBIT_MPI_CHECK(MPI_Comm_split(c->comm, c->rank / ranks_per_host, c->rank, &local->comm));
    }
    LOWBIT_MPI_CHECK(MPI_Comm_set_errhandler(local->comm, MPI_ERRORS_RETURN));
    LOWBIT_MPI_CHECK(MPI_Comm_rank(local->comm, &local->rank));
    LOWBIT_MPI_CHECK(MPI_Comm_size(local->comm, &local->size));
    int sizes[2] = {local->size, -local->size};
    LOWBIT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MIN, c->comm));
    LOWBIT_CHECK(sizes[0] == -sizes[1], "SplitByHost: every host must hold the same number of ranks; they hold ",
                 sizes[0], " to ", -sizes[1]);
    LOWBIT_MPI_CHECK(MPI_Comm_split(c->comm, local->rank, c->rank, &cross->comm));
    LOWBIT_MPI_CHECK(MPI_Comm_set_errhandler(cross->comm, MPI_ERRORS_RETURN));
    LOWBIT_MPI_CHECK(MPI_Comm_rank(cross->comm, &cross->rank));
    LOWBIT_MPI_CHECK(MPI_Comm_size(cross->comm, &cross->size));
    // Blocks of ranks on one machine (tests) still share memory.
    local->one_node = ranks_per_host == 0 || one_node;
    cross->one_node = one_node;
  })->Wait();
  HostGroups groups;
  groups.local = std::shared_ptr<ProcessGroup>(new MpiProcessGroup(options_, worker_, local));
  groups.cross = std::shared_ptr<ProcessGroup>(new MpiProcessGroup(options_, worker_, cross));
  return groups;
}

MpiProcessGroup::~MpiProcessGroup() {
  if (!owns_worker_) return;  // a split group: the world group runs the worker
  std::unique_lock<std::mutex> lock(worker_->mu);
  worker_->stop = true;
  worker_->cv.notify_all();
  // After a timed-out collective the worker is stuck inside MPI for good:
  // leave it (it owns its state through a shared_ptr) and skip MPI_Finalize,
  // which could never return. The launcher then sees this rank fail.
  const bool finished = worker_->timed_out
      ? false
      : worker_->cv.wait_for(lock, options_.timeout, [this] { return worker_->exited; });
  lock.unlock();
  if (finished) {
    worker_->thread.join();
  } else {
    worker_->thread.detach();
  }
}

std::shared_ptr<Work> MpiProcessGroup::Enqueue(std::string description, std::vector<at::Tensor> result,
                                               std::function<void()> run, std::function<void()> finisher) {
  LOWBIT_CHECK(!worker_->timed_out, description,
               ": the MPI process group is unusable because an earlier collective timed out");
  auto work = std::make_shared<AsyncWork>(std::move(description), std::move(result), options_.timeout);
  if (finisher) work->SetFinisher(std::move(finisher));
  std::weak_ptr<Worker> weak = worker_;
  work->SetTimeoutHandler([weak] {
    if (auto w = weak.lock()) w->timed_out = true;
  });
  std::lock_guard<std::mutex> lock(worker_->mu);
  worker_->queue.push_back(Worker::Task{work, std::move(run)});
  worker_->cv.notify_all();
  return work;
}

namespace {

// Large float sums and means by a ring over point-to-point messages (the
// bandwidth-optimal allreduce: a reduce-scatter then an all-gather, each of
// P - 1 steps moving 1/P of the data to the right-hand neighbour; Patarasuk
// and Yuan 2009, as Gloo and NCCL do). Each rank adds what it receives into
// its copy and, at the last reduce step, scales its finished block by `scale`
// in the same pass (the mean costs no pass of its own), then the finished
// blocks travel once around the ring. Each block is reduced once, in ring
// order, and copied, so every rank ends with the same bits. Below this many
// elements per rank OpenMPI's allreduce (latency-bound algorithms) is used:
// on one host, where copies are cheap and messages are latency-bound longer,
// and across hosts, where bytes on the wire count from much smaller sizes
// (the Fashion-MNIST CNN's 0.83 MB gradient at 100 Mbit/s: see docs/comm.md).
constexpr int64_t kRingMinPerRankOneNode = int64_t{1} << 16;
constexpr int64_t kRingMinPerRankHosts = int64_t{1} << 12;
// Ring steps move their blocks in messages of at most this many bytes (MPI
// counts are ints). Smaller segments of blocking exchanges were measured
// slower on scripts/netsim (1 MiB: 1.56 s against 0.85-1.26 s whole at 2 ranks).
constexpr int64_t kRingSegmentBytes = int64_t{1} << 30;

// Sends `send_bytes` to `right` while receiving `recv_bytes` from `left`, in
// segments; on_segment(offset, bytes) runs after each received segment.
template <typename F>
void SegmentedSendRecv(MPI_Comm comm, const uint8_t* send, int64_t send_bytes, int right, uint8_t* recv,
                       int64_t recv_bytes, int left, int tag, F&& on_segment) {
  for (int64_t off = 0; off < std::max(send_bytes, recv_bytes); off += kRingSegmentBytes) {
    const int64_t s = std::clamp<int64_t>(send_bytes - off, 0, kRingSegmentBytes);
    const int64_t r = std::clamp<int64_t>(recv_bytes - off, 0, kRingSegmentBytes);
    LOWBIT_MPI_CHECK(MPI_Sendrecv(send + off, static_cast<int>(s), MPI_BYTE, right, tag, recv + off,
                                  static_cast<int>(r), MPI_BYTE, left, tag, comm, MPI_STATUS_IGNORE));
    if (r > 0) on_segment(off, r);
  }
}

// Element arithmetic of the ring: 16-bit floats add in float and round once
// per addition (as the MPI operators above do), the mean scales after.
template <typename T>
T AddElements(T a, T b) {
  return T(static_cast<float>(a) + static_cast<float>(b));
}
template <>
float AddElements(float a, float b) {
  return a + b;
}
template <typename T>
T ScaleElement(T a, float s) {
  return T(static_cast<float>(a) * s);
}

template <typename T>
void RingAllReduce(MPI_Comm comm, int rank, int size, T* data, int64_t count, float scale, bool one_node) {
  constexpr int64_t kBytes = sizeof(T);
  auto bytes_of = [](T* p) { return reinterpret_cast<uint8_t*>(p); };
  if (size == 2 && !one_node) {
    // Two hosts: one exchange of the whole buffer, each adding the other's
    // (a + b == b + a, so both hold the same bits). The same bytes as the
    // ring's two steps, and steady on TCP where the ring's two half-size
    // steps measured 0.85 or 1.26 s by turns for 100 MB at 1 Gbit/s. (On
    // one host the ring is faster: it copies half as much.)
    // Receive buffers are left uninitialised (a std::vector would zero them: a
    // pass over the buffer on every call).
    std::unique_ptr<T[]> other_buffer(new T[static_cast<size_t>(count)]);
    T* other = other_buffer.get();
    SegmentedSendRecv(comm, bytes_of(data), count * kBytes, 1 - rank, bytes_of(other), count * kBytes,
                      1 - rank, 3, [&](int64_t off, int64_t bytes) {
                        for (int64_t i = off / kBytes; i < (off + bytes) / kBytes; ++i) {
                          const T sum = AddElements(data[i], other[i]);
                          data[i] = scale != 1.0f ? ScaleElement(sum, scale) : sum;
                        }
                      });
    return;
  }
  std::vector<int64_t> begin(size + 1);
  for (int r = 0; r <= size; ++r) begin[r] = count * r / size;
  auto block_bytes = [&](int b) { return (begin[b + 1] - begin[b]) * kBytes; };
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  std::unique_ptr<T[]> incoming_buffer(new T[static_cast<size_t>(count / size + 1)]);
  T* incoming = incoming_buffer.get();
  for (int s = 0; s < size - 1; ++s) {
    const int send = (rank - s + size) % size, recv = (rank - s - 1 + 2 * size) % size;
    T* out = data + begin[recv];
    const bool last = s == size - 2 && scale != 1.0f;
    SegmentedSendRecv(comm, bytes_of(data + begin[send]), block_bytes(send), right, bytes_of(incoming),
                      block_bytes(recv), left, 0, [&](int64_t off, int64_t bytes) {
                        const int64_t i0 = off / kBytes, i1 = (off + bytes) / kBytes;
                        if (last) {
                          for (int64_t i = i0; i < i1; ++i) out[i] = ScaleElement(AddElements(out[i], incoming[i]), scale);
                        } else {
                          for (int64_t i = i0; i < i1; ++i) out[i] = AddElements(out[i], incoming[i]);
                        }
                      });
  }
  for (int s = 0; s < size - 1; ++s) {
    const int send = (rank + 1 - s + size) % size, recv = (rank - s + size) % size;
    SegmentedSendRecv(comm, bytes_of(data + begin[send]), block_bytes(send), right, bytes_of(data + begin[recv]),
                      block_bytes(recv), left, 1, [](int64_t, int64_t) {});
  }
}

// All-gathers of at least this many bytes in all go around a ring of
// point-to-point messages (P - 1 steps, each rank forwarding the block it
// received last): what TCP links carry at their rate, where OpenMPI's
// MPI_Allgatherv measured well below it (scripts/bench.sh hooks).
constexpr int64_t kRingAllGatherMinBytes = int64_t{1} << 20;

// Blocks of `bytes[r]` bytes at `offsets[r]` of `out`; this rank's is in place.
void RingAllGather(MPI_Comm comm, int rank, int size, uint8_t* out, const std::vector<int64_t>& bytes,
                   const std::vector<int64_t>& offsets) {
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  for (int s = 0; s < size - 1; ++s) {
    const int send = (rank - s + size) % size, recv = (rank - s - 1 + 2 * size) % size;
    SegmentedSendRecv(comm, out + offsets[send], bytes[send], right, out + offsets[recv], bytes[recv], left, 2,
                      [](int64_t, int64_t) {});
  }
}

}  // namespace

std::shared_ptr<Work> MpiProcessGroup::DoAllReduce(at::Tensor tensor, ReduceOp op) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int count = CheckedCount(tensor.numel(), "AllReduce tensor");
  const at::ScalarType dtype = tensor.scalar_type();
  if ((dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16) &&
      (op == ReduceOp::kSum || op == ReduceOp::kAvg) && size_ > 1 &&
      tensor.numel() >= (c->one_node ? kRingMinPerRankOneNode : kRingMinPerRankHosts) * size_) {
    const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(size_) : 1.0f;
    return Enqueue(Describe("AllReduce", tensor), {tensor}, [w, c, tensor, scale, dtype] {
      if (dtype == at::kFloat) {
        RingAllReduce(c->comm, c->rank, c->size, tensor.data_ptr<float>(), tensor.numel(), scale, c->one_node);
      } else if (dtype == at::kHalf) {
        RingAllReduce(c->comm, c->rank, c->size, tensor.data_ptr<c10::Half>(), tensor.numel(), scale, c->one_node);
      } else {
        RingAllReduce(c->comm, c->rank, c->size, tensor.data_ptr<c10::BFloat16>(), tensor.numel(), scale,
                      c->one_node);
      }
    });
  }
  std::function<void()> finisher;
  if (op == ReduceOp::kAvg) {
    const double factor = 1.0 / size_;
    finisher = [tensor, factor]() mutable { kernels::ScaleInPlace(tensor, factor); };
  }
  return Enqueue(
      Describe("AllReduce", tensor), {tensor},
      [w, c, tensor, count, op] {
        LOWBIT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), count, w->Type(tensor.scalar_type()),
                                       w->Op(op, tensor.scalar_type()), c->comm));
      },
      std::move(finisher));
}

std::shared_ptr<Work> MpiProcessGroup::DoAllGather(at::Tensor output, at::Tensor input) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int count = CheckedCount(input.numel(), "AllGather input");
  CheckedCount(output.numel(), "AllGather output");
  return Enqueue(Describe("AllGather", input), {output}, [w, c, output, input, count] {
    const int64_t block = input.numel() * input.element_size();
    if (c->size > 1 && block * c->size >= kRingAllGatherMinBytes) {
      std::vector<int64_t> bytes(c->size, block), offsets(c->size);
      for (int r = 0; r < c->size; ++r) offsets[r] = r * block;
      uint8_t* out = static_cast<uint8_t*>(output.data_ptr());
      if (block > 0) std::memcpy(out + offsets[c->rank], input.data_ptr(), static_cast<size_t>(block));
      RingAllGather(c->comm, c->rank, c->size, out, bytes, offsets);
      return;
    }
    const MPI_Datatype type = w->Type(input.scalar_type());
    LOWBIT_MPI_CHECK(MPI_Allgather(input.data_ptr(), count, type, output.data_ptr(), count, type, c->comm));
  });
}

std::shared_ptr<Work> MpiProcessGroup::DoAllGatherV(at::Tensor input) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int count = CheckedCount(input.numel(), "AllGatherV input");
  auto parts = std::make_shared<std::vector<at::Tensor>>();
  const int size = size_;
  auto inner = Enqueue(Describe("AllGatherV", input), {}, [w, c, input, count, parts, size] {
    std::vector<int> counts(size), displs(size);
    LOWBIT_MPI_CHECK(MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, c->comm));
    int64_t total = 0;
    for (int i = 0; i < size; ++i) {
      displs[i] = CheckedCount(total, "AllGatherV output");
      total += counts[i];
    }
    CheckedCount(total, "AllGatherV output");
    at::Tensor output = at::empty({total}, input.options());
    const int64_t element = input.element_size();
    if (size > 1 && total * element >= kRingAllGatherMinBytes) {
      std::vector<int64_t> bytes(size), offsets(size);
      for (int r = 0; r < size; ++r) {
        bytes[r] = int64_t{counts[r]} * element;
        offsets[r] = int64_t{displs[r]} * element;
      }
      uint8_t* out = static_cast<uint8_t*>(output.data_ptr());
      if (bytes[c->rank] > 0) std::memcpy(out + offsets[c->rank], input.data_ptr(), static_cast<size_t>(bytes[c->rank]));
      RingAllGather(c->comm, c->rank, size, out, bytes, offsets);
    } else {
      const MPI_Datatype type = w->Type(input.scalar_type());
      LOWBIT_MPI_CHECK(MPI_Allgatherv(input.data_ptr(), count, type, output.data_ptr(), counts.data(),
                                      displs.data(), type, c->comm));
    }
    parts->clear();
    for (int i = 0; i < size; ++i) parts->push_back(output.narrow(0, displs[i], counts[i]));
  });
  return std::make_shared<DeferredResultWork>(std::move(inner), std::move(parts));
}

std::shared_ptr<Work> MpiProcessGroup::DoReduceScatter(at::Tensor output, at::Tensor input, ReduceOp op) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int count = CheckedCount(output.numel(), "ReduceScatter output");
  CheckedCount(input.numel(), "ReduceScatter input");
  std::function<void()> finisher;
  if (op == ReduceOp::kAvg) {
    const double factor = 1.0 / size_;
    finisher = [output, factor]() mutable { kernels::ScaleInPlace(output, factor); };
  }
  return Enqueue(
      Describe("ReduceScatter", input), {output},
      [w, c, output, input, count, op] {
        LOWBIT_MPI_CHECK(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), count,
                                                  w->Type(input.scalar_type()),
                                                  w->Op(op, input.scalar_type()), c->comm));
      },
      std::move(finisher));
}

std::shared_ptr<Work> MpiProcessGroup::DoAllToAll(at::Tensor output, at::Tensor input) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int chunk = CheckedCount(input.numel() / size_, "AllToAll chunk");
  CheckedCount(input.numel(), "AllToAll input");
  return Enqueue(Describe("AllToAll", input), {output}, [w, c, output, input, chunk] {
    const MPI_Datatype type = w->Type(input.scalar_type());
    LOWBIT_MPI_CHECK(MPI_Alltoall(input.data_ptr(), chunk, type, output.data_ptr(), chunk, type, c->comm));
  });
}

std::shared_ptr<Work> MpiProcessGroup::DoBroadcast(at::Tensor tensor, int root) {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  const int count = CheckedCount(tensor.numel(), "Broadcast tensor");
  return Enqueue(Describe("Broadcast", tensor), {tensor}, [w, c, tensor, count, root] {
    LOWBIT_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), count, w->Type(tensor.scalar_type()), root, c->comm));
  });
}

std::shared_ptr<Work> MpiProcessGroup::DoBarrier() {
  Worker* w = worker_.get();
  std::shared_ptr<const Comm> c = comm_;
  return Enqueue(Describe("Barrier", at::Tensor()), {}, [w, c] { LOWBIT_MPI_CHECK(MPI_Barrier(c->comm)); });
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> CreateMpiProcessGroup(ProcessGroupOptions options) {
  try {
    return std::shared_ptr<ProcessGroup>(std::make_shared<MpiProcessGroup>(options));
  } catch (const std::exception& e) {
    return absl::UnavailableError(std::string("cannot create the MPI process group: ") + ::lowbit::base::Message(e));
  }
}

}  // namespace lowbit::comm
