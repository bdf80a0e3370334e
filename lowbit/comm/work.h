// Work: the handle every lowbit collective returns.
//
// A collective is started when it is called and runs asynchronously; Wait()
// blocks until it is done (or throws when it failed or ran past the process
// group's timeout), Result() holds its output tensors afterwards.
//
//   auto work = pg->AllReduce(grad, lowbit::comm::ReduceOp::kAvg);
//   ...                      // overlap other work here
//   work->Wait();            // grad now holds the mean over ranks
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lowbit::comm {

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation finished; rethrows its failure. A second call
  // returns at once (or rethrows the same failure).
  virtual void Wait() = 0;
  // True once the operation finished, successfully or not; never blocks.
  virtual bool IsCompleted() = 0;
  // The output tensors, valid after Wait().
  virtual std::vector<at::Tensor> Result() = 0;
  // Seconds the operation took from its start to its completion, after Wait().
  virtual double Seconds() = 0;
};

// A Work completed by another thread (MarkCompleted / MarkFailed). Wait() gives
// up after `timeout` and throws an error that names `description`.
class AsyncWork : public Work {
 public:
  AsyncWork(std::string description, std::vector<at::Tensor> result, std::chrono::milliseconds timeout);

  void Wait() override;
  bool IsCompleted() override;
  std::vector<at::Tensor> Result() override;
  double Seconds() override;

  // Called by the thread that runs the operation.
  void MarkStarted();
  void MarkCompleted();
  void MarkFailed(std::exception_ptr error);
  // Runs after a successful completion and before waiters wake (e.g. the
  // division that turns a sum into a mean). Set before the work is queued.
  void SetFinisher(std::function<void()> finisher) { finisher_ = std::move(finisher); }
  // Runs in the waiting thread when Wait() gives up, before it throws.
  void SetTimeoutHandler(std::function<void()> handler) { on_timeout_ = std::move(handler); }
  const std::string& Description() const { return description_; }

 private:
  using Clock = std::chrono::steady_clock;
  const std::string description_;
  const std::vector<at::Tensor> result_;
  const std::chrono::milliseconds timeout_;
  std::function<void()> finisher_;
  std::function<void()> on_timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point end_;
};

// A Work that is already complete, for operations done synchronously.
class CompletedWork : public Work {
 public:
  explicit CompletedWork(std::vector<at::Tensor> result) : result_(std::move(result)) {}
  void Wait() override {}
  bool IsCompleted() override { return true; }
  std::vector<at::Tensor> Result() override { return result_; }
  double Seconds() override { return 0.0; }

 private:
  std::vector<at::Tensor> result_;
};

// Completes with `inner`, but its results are the tensors in `result`, which
// the operation fills in as it runs (AllGatherV's outputs exist only once the
// lengths have been exchanged).
class DeferredResultWork final : public Work {
 public:
  DeferredResultWork(std::shared_ptr<Work> inner, std::shared_ptr<std::vector<at::Tensor>> result)
      : inner_(std::move(inner)), result_(std::move(result)) {}
  void Wait() override { inner_->Wait(); }
  bool IsCompleted() override { return inner_->IsCompleted(); }
  std::vector<at::Tensor> Result() override { return *result_; }
  double Seconds() override { return inner_->Seconds(); }

 private:
  std::shared_ptr<Work> inner_;
  std::shared_ptr<std::vector<at::Tensor>> result_;
};

// The rest of an operation whose collectives were started by the caller:
// Wait() runs `finish` once (it waits for those collectives and may start and
// wait for more) and completes with its result. Compression hooks use it so
// that a bucket's later stages run when DDP collects the bucket, in the same
// order on every rank.
class ContinuationWork final : public Work {
 public:
  explicit ContinuationWork(std::function<std::vector<at::Tensor>()> finish);
  void Wait() override;
  bool IsCompleted() override;
  std::vector<at::Tensor> Result() override;
  double Seconds() override;

 private:
  std::function<std::vector<at::Tensor>()> finish_;
  std::mutex mu_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<at::Tensor> result_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  double seconds_ = 0.0;
};

}  // namespace lowbit::comm
