#include "lowbit/comm/work.h"

#include <c10/util/Exception.h>

#include "lowbit/base/error.h"

namespace lowbit::comm {

AsyncWork::AsyncWork(std::string description, std::vector<at::Tensor> result,
                     std::chrono::milliseconds timeout)
    : description_(std::move(description)), result_(std::move(result)), timeout_(timeout) {}

void AsyncWork::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout_, [this] { return done_; })) {
    if (on_timeout_) on_timeout_();
    LOWBIT_CHECK(false, description_, " did not complete within ", std::chrono::duration<double>(timeout_).count(),
                 " s: a peer rank has probably died, hung, or stopped calling the same collectives");
  }
  if (error_) std::rethrow_exception(error_);
}

bool AsyncWork::IsCompleted() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

std::vector<at::Tensor> AsyncWork::Result() { return result_; }

double AsyncWork::Seconds() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_ ? std::chrono::duration<double>(end_ - start_).count() : 0.0;
}

void AsyncWork::MarkStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  start_ = Clock::now();
}

void AsyncWork::MarkCompleted() {
  std::exception_ptr error;
  if (finisher_) {
    try {
      finisher_();
    } catch (...) {
      error = std::current_exception();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  end_ = Clock::now();
  error_ = error;
  done_ = true;
  cv_.notify_all();
}

void AsyncWork::MarkFailed(std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(mu_);
  end_ = Clock::now();
  error_ = error;
  done_ = true;
  cv_.notify_all();
}

}  // namespace lowbit::comm

namespace lowbit::comm {

ContinuationWork::ContinuationWork(std::function<std::vector<at::Tensor>()> finish) : finish_(std::move(finish)) {}

void ContinuationWork::Wait() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!done_) {
    try {
      result_ = finish_();
    } catch (...) {
      error_ = std::current_exception();
    }
    finish_ = nullptr;
    done_ = true;
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  if (error_) std::rethrow_exception(error_);
}

bool ContinuationWork::IsCompleted() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

std::vector<at::Tensor> ContinuationWork::Result() {
  std::lock_guard<std::mutex> lock(mu_);
  return result_;
}

double ContinuationWork::Seconds() {
  std::lock_guard<std::mutex> lock(mu_);
  return seconds_;
}

}  // namespace lowbit::comm
