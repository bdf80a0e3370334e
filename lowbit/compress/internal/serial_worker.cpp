#include "lowbit/compress/internal/serial_worker.h"

#include <ATen/Parallel.h>

#include <utility>

namespace lowbit::compress::internal {

SerialWorker::SerialWorker(int intra_op_threads) : thread_([this, intra_op_threads] { Loop(intra_op_threads); }) {}

SerialWorker::~SerialWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void SerialWorker::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void SerialWorker::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void SerialWorker::Loop(int intra_op_threads) {
  // With OpenMP the count is per thread; the native pool's is global and
  // already right (setting it again there would warn).
  if (at::get_num_threads() != intra_op_threads) at::set_num_threads(intra_op_threads);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    task();
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace lowbit::compress::internal
