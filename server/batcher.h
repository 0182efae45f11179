// The window-level dynamic batcher of one model: windows of every admitted
// request wait here until a worker takes a batch.
//
// - Batches hold up to max_batch_size windows, from any requests.
// - A worker waits at most max_queue_delay after the oldest queued window
//   arrived for a fuller batch (Triton's max_queue_delay_microseconds).
// - Priorities: a batch takes windows of priority 2 before 1 before 0, but a
//   request that has waited priority_aging at its level moves up one level
//   (aging), so that no stream of higher-priority work starves it.
// - Within a priority, requests take turns one window at a time (round
//   robin), so a 20-window request admitted behind a 1000-window one waits
//   for about 20 x (number of active requests) windows, not 1000.
// - Windows of a request that is no longer Alive() (cancelled, past its
//   deadline, failed) leave the queue when a batch is formed, or at once
//   through Remove().
//
// Threading: Enqueue/Remove/Shutdown from any thread; NextBatch() from the
// worker threads (blocking). Owns nothing but shared references to sources.
#ifndef UPP_SERVER_BATCHER_H_
#define UPP_SERVER_BATCHER_H_

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace upp::server {

// What the batcher and the workers need of a request.
class WindowSource {
 public:
  static constexpr int kMaxPriority = 2;
  virtual ~WindowSource() = default;
  virtual int priority() const = 0;  // 0..kMaxPriority
  // Cheap and lock-free (called under the batcher's lock).
  virtual bool Alive() const = 0;
  // A version's warm-up windows (model_registry.h): not counted in metrics.
  virtual bool warmup() const { return false; }
  // Worker threads: the network input of `item`; the logits of `item`; or
  // the error of a batch that contained windows of this source.
  virtual absl::Status ReadWindow(int64_t item, float* dst) = 0;
  virtual void WindowDone(int64_t item, const float* logits) = 0;
  virtual void WindowsFailed(const absl::Status& status) = 0;
  // The request's span as a W3C traceparent (tracing/), opaque here: the
  // span of a batch carrying its windows links to it. Empty: not traced.
  virtual std::string_view trace_parent() const { return {}; }
};

struct WindowTask {
  std::shared_ptr<WindowSource> source;
  int64_t item = 0;
  absl::Time enqueued;
};

struct BatcherOptions {
  int max_batch_size = 4;
  absl::Duration max_queue_delay = absl::Microseconds(2000);
  absl::Duration priority_aging = absl::Seconds(30);
};

class Batcher {
 public:
  explicit Batcher(BatcherOptions options) : options_(options) {}

  // Queues items [0, num_items) of `source`; after Shutdown(), fails them
  // (WindowsFailed: UNAVAILABLE) and keeps nothing.
  void Enqueue(std::shared_ptr<WindowSource> source, int64_t num_items);
  // Drops the windows of `source` still queued.
  void Remove(const WindowSource* source);
  // Blocks until a batch is ready; empty after Shutdown() once drained of
  // nothing (Shutdown drops queued windows).
  std::vector<WindowTask> NextBatch();
  void Shutdown();

  int64_t queued_windows() const;

 private:
  struct Entry {
    std::shared_ptr<WindowSource> source;
    int64_t next = 0, end = 0;
    absl::Time enqueued;
    absl::Time level_since;  // when it reached its current priority level
  };
  void AgeLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropDeadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ReadyLocked(absl::Time now, absl::Time* wake) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BatcherOptions options_;
  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::array<std::deque<Entry>, WindowSource::kMaxPriority + 1> rings_ ABSL_GUARDED_BY(mu_);
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upp::server

#endif  // UPP_SERVER_BATCHER_H_
