// SerialWorker: one thread that runs posted tasks in the order they were
// posted, for CompressionHook's encoding off the backward thread (Note
// [Encoding off the backward thread] in compression_hook.cpp).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace lowbit::compress::internal {

class SerialWorker {
 public:
  // The thread uses `intra_op_threads` ATen threads (the creating thread's
  // count: a new thread would otherwise start from OpenMP's default).
  explicit SerialWorker(int intra_op_threads);
  ~SerialWorker();  // runs what is queued, then joins
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  // Tasks must not throw: each catches its own errors.
  void Post(std::function<void()> task);
  // Returns once every task posted so far has run.
  void Drain();

 private:
  void Loop(int intra_op_threads);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lowbit::compress::internal
