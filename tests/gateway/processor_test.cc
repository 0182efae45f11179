// Which failures the gateway sends again later.
#include "gateway/processor.h"

#include <gtest/gtest.h>

#include "proto/api.h"

namespace upp::gateway {
namespace {

TEST(RetryableTest, BusyServicesAreRetriedRequestsOverItsLimitsAreNot) {
  EXPECT_TRUE(Retryable(absl::UnavailableError("draining")));
  EXPECT_TRUE(Retryable(absl::DeadlineExceededError("slow")));
  // Refused for the load of the moment: the service says when to come back.
  EXPECT_TRUE(Retryable(proto::WithRetryAfter(absl::ResourceExhaustedError("at its memory limit"), absl::Seconds(30))));
  // Refused for what the series is (more instances than the service takes).
  EXPECT_FALSE(Retryable(absl::ResourceExhaustedError("more than 4096 input files")));
  EXPECT_FALSE(Retryable(absl::InvalidArgumentError("slices missing")));
}

TEST(RetryableTest, TheHintSurvivesOnlyAsSet) {
  const absl::Status hinted = proto::WithRetryAfter(absl::ResourceExhaustedError("busy"), absl::Milliseconds(1500));
  ASSERT_TRUE(proto::RetryAfter(hinted).has_value());
  EXPECT_EQ(*proto::RetryAfter(hinted), absl::Milliseconds(1500));
  EXPECT_FALSE(proto::RetryAfter(absl::ResourceExhaustedError("busy")).has_value());
}

}  // namespace
}  // namespace upp::gateway
