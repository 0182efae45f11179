// cpp-httplib's task queue for the DICOMweb receiver, bounded: `threads`
// workers serve connections, at most `max_queued` accepted connections
// wait for one. The library's own ThreadPool (0.11) queues without bound:
// each connection accepted while every worker is busy holds a file
// descriptor and memory until its turn. Here enqueue() waits while the
// queue is full, so the accept loop stops accepting and further clients
// wait in the kernel's listen backlog and their own connect retries (their
// connect timeout is the bound), costing the gateway nothing.
//
// Thread-safe. shutdown() runs what is queued, then joins the workers.
#ifndef UPP_GATEWAY_BOUNDED_TASK_QUEUE_H_
#define UPP_GATEWAY_BOUNDED_TASK_QUEUE_H_

#include <httplib.h>

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace upp::gateway {

class BoundedTaskQueue : public httplib::TaskQueue {
 public:
  // `threads` and `max_queued` are at least 1.
  BoundedTaskQueue(size_t threads, size_t max_queued);
  ~BoundedTaskQueue() override;

  // Waits while max_queued tasks are waiting already.
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  // Tasks waiting for a worker (not those running).
  size_t queued() const;

 private:
  void Work();
  // After shutdown() every queued task still runs (cpp-httplib's tasks
  // close their sockets).
  bool RoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_ || tasks_.size() < max_queued_; }
  bool WorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_ || !tasks_.empty(); }

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_BOUNDED_TASK_QUEUE_H_
