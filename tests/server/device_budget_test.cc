#include "server/device_budget.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

namespace upp::server {
namespace {

TEST(DeviceBudgetTest, JobsFitUpToTheLimitPerDevice) {
  DeviceBudget budget(1000);
  EXPECT_TRUE(budget.Reserve("cuda:0", 600));
  EXPECT_FALSE(budget.Reserve("cuda:0", 401));  // 1001: one byte too many, nothing taken
  EXPECT_EQ(budget.held("cuda:0"), 600);
  EXPECT_TRUE(budget.Reserve("cuda:0", 400));   // exactly the limit
  EXPECT_TRUE(budget.Reserve("cuda:1", 1000));  // each device has its own
  EXPECT_FALSE(budget.Reserve("cuda:0", 1));
  budget.Release("cuda:0", 600);
  EXPECT_EQ(budget.held("cuda:0"), 400);
  EXPECT_TRUE(budget.Reserve("cuda:0", 600));
}

TEST(DeviceBudgetTest, HostileEstimatesAreRefusedWithoutOverflow) {
  DeviceBudget budget(std::numeric_limits<int64_t>::max());
  ASSERT_TRUE(budget.Reserve("cuda:0", 10));
  // An estimate clamped to INT64_MAX must not wrap the sum around.
  EXPECT_FALSE(budget.Reserve("cuda:0", std::numeric_limits<int64_t>::max()));
  EXPECT_FALSE(budget.Reserve("cuda:0", -5));
  EXPECT_EQ(budget.held("cuda:0"), 10);
  DeviceBudget none(0);
  EXPECT_FALSE(none.Reserve("cuda:0", 1));
  EXPECT_TRUE(none.Reserve("cuda:0", 0));
}

TEST(DeviceBudgetTest, ConcurrentReservationsNeverPassTheLimit) {
  DeviceBudget budget(100 * 7);
  std::vector<std::thread> threads;
  std::vector<int> taken(8, 0);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i)
        if (budget.Reserve("cuda:0", 7)) ++taken[t];
    });
  for (auto& t : threads) t.join();
  int sum = 0;
  for (int n : taken) sum += n;
  EXPECT_EQ(sum, 100);
  EXPECT_EQ(budget.held("cuda:0"), 700);
}

}  // namespace
}  // namespace upp::server
