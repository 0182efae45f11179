// The window batcher with fake sources: batches form across requests,
// priorities are strict, requests take turns, the queue delay is bounded,
// dead requests leave at once.
#include "server/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace upp::server {
namespace {

class FakeSource : public WindowSource {
 public:
  explicit FakeSource(int priority = 0) : priority_(priority) {}
  int priority() const override { return priority_; }
  bool Alive() const override { return alive.load(); }
  absl::Status ReadWindow(int64_t, float*) override { return absl::OkStatus(); }
  void WindowDone(int64_t, const float*) override {}
  void WindowsFailed(const absl::Status& s) override { failed = s; }
  std::atomic<bool> alive{true};
  absl::Status failed;

 private:
  int priority_;
};

BatcherOptions Options(int batch, absl::Duration delay) {
  BatcherOptions o;
  o.max_batch_size = batch;
  o.max_queue_delay = delay;
  return o;
}

TEST(BatcherTest, BatchesMixRequestsAndSmallOnesAreNotStarved) {
  Batcher b(Options(4, absl::Milliseconds(1)));
  auto big = std::make_shared<FakeSource>(), small = std::make_shared<FakeSource>();
  b.Enqueue(big, 1000);
  b.Enqueue(small, 20);  // arrives after the big one
  EXPECT_EQ(b.queued_windows(), 1020);
  int64_t windows = 0, small_done = 0, last_small_at = 0;
  std::vector<int64_t> small_items;
  while (small_done < 20) {
    auto batch = b.NextBatch();
    ASSERT_EQ(batch.size(), 4u);
    for (const auto& t : batch) {
      ++windows;
      if (t.source == small) {
        small_items.push_back(t.item);
        ++small_done;
        last_small_at = windows;
      }
    }
  }
  // Turns alternate: the 20 small windows are done within the first ~40.
  EXPECT_LE(last_small_at, 41);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(small_items[i], i);  // in order
  EXPECT_EQ(b.queued_windows(), 1020 - windows);
}

TEST(BatcherTest, HigherPriorityFirst) {
  Batcher b(Options(3, absl::Milliseconds(1)));
  auto low = std::make_shared<FakeSource>(0), high = std::make_shared<FakeSource>(2);
  b.Enqueue(low, 5);
  b.Enqueue(high, 4);
  auto first = b.NextBatch();
  ASSERT_EQ(first.size(), 3u);
  for (const auto& t : first) EXPECT_EQ(t.source, high);
  auto second = b.NextBatch();
  ASSERT_EQ(second.size(), 3u);
  EXPECT_EQ(second[0].source, high);
  EXPECT_EQ(second[1].source, low);
}

// Aging: a low-priority request behind a steady stream of high-priority work
// moves up a level each time it has waited priority_aging, so it is served.
TEST(BatcherTest, LowPriorityIsNotStarvedForever) {
  BatcherOptions o = Options(1, absl::Milliseconds(1));
  o.priority_aging = absl::Milliseconds(40);
  Batcher b(o);
  auto low = std::make_shared<FakeSource>(0), high = std::make_shared<FakeSource>(2);
  b.Enqueue(low, 1);
  b.Enqueue(high, 1000000);  // never runs out during the test
  const absl::Time start = absl::Now();
  bool low_served = false;
  int batches = 0;
  while (!low_served && absl::Now() - start < absl::Seconds(5)) {
    for (const auto& t : b.NextBatch()) low_served |= t.source == low;
    ++batches;
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_TRUE(low_served);
  // Two levels of 40 ms each, then its turn at the top level.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(80));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_GT(batches, 5);
}

TEST(BatcherTest, PartialBatchAfterTheQueueDelay) {
  Batcher b(Options(8, absl::Milliseconds(50)));
  auto s = std::make_shared<FakeSource>();
  const absl::Time start = absl::Now();
  b.Enqueue(s, 3);
  auto batch = b.NextBatch();
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(batch.size(), 3u);
  EXPECT_GE(waited, absl::Milliseconds(45));
  EXPECT_LT(waited, absl::Seconds(5));
}

TEST(BatcherTest, AFullBatchDoesNotWait) {
  Batcher b(Options(4, absl::Seconds(30)));
  b.Enqueue(std::make_shared<FakeSource>(), 4);
  const absl::Time start = absl::Now();
  EXPECT_EQ(b.NextBatch().size(), 4u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(BatcherTest, DeadAndRemovedSourcesLeaveTheQueue) {
  Batcher b(Options(4, absl::Milliseconds(1)));
  auto dead = std::make_shared<FakeSource>(), removed = std::make_shared<FakeSource>(),
       live = std::make_shared<FakeSource>();
  b.Enqueue(dead, 100);
  b.Enqueue(removed, 100);
  b.Enqueue(live, 2);
  b.Remove(removed.get());
  EXPECT_EQ(b.queued_windows(), 102);
  dead->alive = false;
  auto batch = b.NextBatch();
  ASSERT_EQ(batch.size(), 2u);
  for (const auto& t : batch) EXPECT_EQ(t.source, live);
  EXPECT_EQ(b.queued_windows(), 0);
}

TEST(BatcherTest, ShutdownWakesWorkers) {
  Batcher b(Options(4, absl::Milliseconds(1)));
  std::atomic<bool> returned{false};
  std::thread worker([&] {
    EXPECT_TRUE(b.NextBatch().empty());
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(returned.load());
  b.Shutdown();
  worker.join();
  EXPECT_TRUE(returned.load());
}

// The server stops its batchers before its CPU pool, whose last tasks may
// still enqueue: nothing is kept (it would outlive the server's state) and
// the source is told.
TEST(BatcherTest, AfterShutdownSourcesAreFailedNotKept) {
  Batcher b(Options(4, absl::Milliseconds(1)));
  b.Shutdown();
  auto late = std::make_shared<FakeSource>();
  b.Enqueue(late, 3);
  EXPECT_EQ(b.queued_windows(), 0);
  EXPECT_EQ(late.use_count(), 1);
  EXPECT_EQ(late->failed.code(), absl::StatusCode::kUnavailable) << late->failed;
}

}  // namespace
}  // namespace upp::server
