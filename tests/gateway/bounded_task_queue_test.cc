// The DICOMweb receiver's task queue: never more than `threads` tasks run
// at once, and enqueue() waits (the accept loop stops accepting) while
// `max_queued` tasks are waiting.
#include "gateway/bounded_task_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace upp::gateway {
namespace {

TEST(BoundedTaskQueueTest, EnqueueWaitsWhileTheQueueIsFull) {
  BoundedTaskQueue queue(/*threads=*/1, /*max_queued=*/2);
  absl::Notification release;
  std::atomic<int> done{0};
  auto blocked = [&] {
    release.WaitForNotification();
    ++done;
  };
  queue.enqueue(blocked);  // runs, and holds the one worker
  while (queue.queued() != 0) absl::SleepFor(absl::Milliseconds(1));
  queue.enqueue(blocked);  // waits in the queue
  queue.enqueue(blocked);  // waits in the queue: now full
  EXPECT_EQ(queue.queued(), 2u);
  std::atomic<bool> fourth_enqueued{false};
  std::thread acceptor([&] {
    queue.enqueue(blocked);
    fourth_enqueued = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(fourth_enqueued.load()) << "enqueue() returned while the queue was full";
  EXPECT_EQ(queue.queued(), 2u);
  EXPECT_EQ(done.load(), 0);
  release.Notify();
  acceptor.join();
  EXPECT_TRUE(fourth_enqueued.load());
  queue.shutdown();  // runs what is queued, then joins
  EXPECT_EQ(done.load(), 4);
}

TEST(BoundedTaskQueueTest, NoMoreThanThreadsRunAtOnce) {
  BoundedTaskQueue queue(/*threads=*/3, /*max_queued=*/100);
  std::atomic<int> running{0}, most{0};
  for (int i = 0; i < 30; ++i)
    queue.enqueue([&] {
      const int now = ++running;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      absl::SleepFor(absl::Milliseconds(5));
      --running;
    });
  queue.shutdown();
  EXPECT_LE(most.load(), 3);
  EXPECT_GT(most.load(), 1);  // and they do run side by side
}

}  // namespace
}  // namespace upp::gateway
