// The timeouts of a Segment call as one decision: each limit fires in the
// phase it belongs to, just after (not before) its configured value, names
// that value, and a decided call is held only by the send stall.
#include "server/call_timeouts.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace upp::server {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000000);

unetrpp::v1::Timeouts Limits() {
  unetrpp::v1::Timeouts t;
  t.set_header_seconds(10);
  t.set_upload_idle_seconds(30);
  t.set_send_stall_seconds(60);
  t.set_max_request_seconds(3600);
  return t;
}

struct Case {
  std::string name;
  CallState call;
  double limit_at;      // seconds after kStart at which the limit is reached
  std::string message;  // what the DEADLINE_EXCEEDED says
};

std::vector<Case> Cases() {
  using Phase = CallState::Phase;
  CallState header{Phase::kHeader, false, kStart, kStart};
  // Reading steadily, long after the header's limit: only the idle time counts.
  CallState receiving{Phase::kReceiving, false, kStart, kStart + absl::Seconds(100)};
  CallState processing{Phase::kProcessing, false, kStart, kStart};
  // Decided (past max_request) with its last write not taken.
  CallState stalled{Phase::kProcessing, true, kStart, kStart, kStart + absl::Seconds(5000)};
  return {{"header", header, 10, "no RequestHeader within 10 s"},
          {"upload idle", receiving, 130, "no input for 30 s"},
          {"whole request", processing, 3600, "limit of 3600 s"},
          {"send stall", stalled, 5060, "did not read its results for 60 s"}};
}

TEST(CallTimeoutsTest, EachLimitFiresJustPastItsValueAndNamesIt) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(ExpiredTimeout(Limits(), c.call, kStart + absl::Seconds(c.limit_at - 1)).ok());
    const absl::Status s = ExpiredTimeout(Limits(), c.call, kStart + absl::Seconds(c.limit_at + 1));
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(s.message().find(c.message), absl::string_view::npos) << s;
  }
}

TEST(CallTimeoutsTest, ADecidedCallWithNothingInFlightIsPastEveryLimit) {
  const CallState done{CallState::Phase::kProcessing, true, kStart, kStart};
  EXPECT_TRUE(ExpiredTimeout(Limits(), done, kStart + absl::Seconds(99999)).ok());
}

}  // namespace
}  // namespace upp::server
