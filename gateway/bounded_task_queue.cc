#include "gateway/bounded_task_queue.h"

#include <utility>

namespace upp::gateway {

BoundedTaskQueue::BoundedTaskQueue(size_t threads, size_t max_queued) : max_queued_(max_queued > 0 ? max_queued : 1) {
  if (threads == 0) threads = 1;
  workers_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

BoundedTaskQueue::~BoundedTaskQueue() { shutdown(); }

void BoundedTaskQueue::enqueue(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &BoundedTaskQueue::RoomLocked));
  tasks_.push_back(std::move(fn));
}

void BoundedTaskQueue::shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  for (auto& w : workers_)
    if (w.joinable()) w.join();
}

size_t BoundedTaskQueue::queued() const {
  absl::MutexLock lock(&mu_);
  return tasks_.size();
}

void BoundedTaskQueue::Work() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &BoundedTaskQueue::WorkLocked));
      if (tasks_.empty()) return;  // shut down, nothing left
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace upp::gateway
