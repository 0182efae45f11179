#include "server/thread_pool.h"

#include <spdlog/spdlog.h>

#include <exception>

namespace upp::server {

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Loop(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::Schedule(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(work));
}

void ThreadPool::Loop() {
  for (;;) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->stopping_ || !p->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping and drained
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    // An exception escaping a task would terminate the process and everyone
    // else's requests; tasks that own a request catch their own (SegmentCall
    // fails that request), this is the last line.
    try {
      work();
    } catch (const std::exception& e) {
      spdlog::error("cpu pool: a task ended with an exception: {}", e.what());
    } catch (...) {
      spdlog::error("cpu pool: a task ended with an unknown exception");
    }
  }
}

}  // namespace upp::server
