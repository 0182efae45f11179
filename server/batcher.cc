#include "server/batcher.h"

#include <algorithm>

namespace upp::server {

void Batcher::Enqueue(std::shared_ptr<WindowSource> source, int64_t num_items) {
  if (num_items <= 0) return;
  const int p = std::clamp(source->priority(), 0, WindowSource::kMaxPriority);
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_) {
      const absl::Time now = absl::Now();
      rings_[p].push_back(Entry{std::move(source), 0, num_items, now, now});
      queued_ += num_items;
      changed_.SignalAll();
      return;
    }
  }
  // Stopped: the workers are gone, and a queued source would outlive the
  // server's state (the server shuts the batchers before the CPU pool, whose
  // last tasks can still get here).
  source->WindowsFailed(absl::UnavailableError("the server is shutting down; retry on another replica"));
}

void Batcher::Remove(const WindowSource* source) {
  absl::MutexLock lock(&mu_);
  for (auto& ring : rings_) {
    for (auto it = ring.begin(); it != ring.end();) {
      if (it->source.get() == source) {
        queued_ -= it->end - it->next;
        it = ring.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void Batcher::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  for (auto& ring : rings_) ring.clear();
  queued_ = 0;
  changed_.SignalAll();
}

int64_t Batcher::queued_windows() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

void Batcher::AgeLocked(absl::Time now) {
  for (int p = WindowSource::kMaxPriority - 1; p >= 0; --p) {
    auto& ring = rings_[p];
    for (auto it = ring.begin(); it != ring.end();) {
      if (now - it->level_since >= options_.priority_aging) {
        it->level_since = now;
        rings_[p + 1].push_back(std::move(*it));
        it = ring.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void Batcher::DropDeadLocked() {
  for (auto& ring : rings_) {
    for (auto it = ring.begin(); it != ring.end();) {
      if (!it->source->Alive()) {
        queued_ -= it->end - it->next;
        it = ring.erase(it);
      } else {
        ++it;
      }
    }
  }
}

bool Batcher::ReadyLocked(absl::Time now, absl::Time* wake) const {
  if (queued_ >= options_.max_batch_size) return true;
  if (queued_ == 0) {
    *wake = absl::InfiniteFuture();
    return false;
  }
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& ring : rings_)
    for (const auto& e : ring) oldest = std::min(oldest, e.enqueued);
  *wake = oldest + options_.max_queue_delay;
  return now >= *wake;
}

std::vector<WindowTask> Batcher::NextBatch() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (shutdown_) return {};
    DropDeadLocked();
    absl::Time wake;
    if (ReadyLocked(absl::Now(), &wake)) break;
    // Woken by Enqueue/Shutdown, or when the oldest window has waited enough;
    // a short cap also notices sources that died without Remove().
    changed_.WaitWithDeadline(&mu_, std::min(wake, absl::Now() + absl::Milliseconds(50)));
  }
  AgeLocked(absl::Now());
  std::vector<WindowTask> batch;
  for (int p = WindowSource::kMaxPriority; p >= 0; --p) {
    auto& ring = rings_[p];
    while (!ring.empty() && static_cast<int>(batch.size()) < options_.max_batch_size) {
      Entry e = std::move(ring.front());
      ring.pop_front();
      batch.push_back(WindowTask{e.source, e.next, e.enqueued});
      --queued_;
      if (++e.next < e.end) ring.push_back(std::move(e));  // its next turn
    }
  }
  if (queued_ > 0) changed_.Signal();  // another worker may form a batch too
  return batch;
}

}  // namespace upp::server
