// A fixed pool of threads running queued closures: decoding, preprocessing,
// postprocessing and encoding, so that gRPC reactors never block.
//
// Hand-written because none of the Debian-packaged libraries we link offers a
// public one (gRPC's and Abseil's are internal); it is a queue and a
// condition variable. Destruction runs the closures already queued, then joins.
#ifndef UPP_SERVER_THREAD_POOL_H_
#define UPP_SERVER_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace upp::server {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Any thread. The closure runs on a pool thread, in FIFO order of start.
  void Schedule(std::function<void()> work);

 private:
  void Loop();
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_THREAD_POOL_H_
