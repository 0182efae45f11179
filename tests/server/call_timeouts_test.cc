// The timeouts of a Segment call as one decision: each limit fires in the
// phase it belongs to, names its configuration field's value, and a decided
// call is held only by the send stall.
#include "server/call_timeouts.h"

#include <gtest/gtest.h>

namespace upp::server {
namespace {

unetrpp::v1::Timeouts Limits() {
  unetrpp::v1::Timeouts t;
  t.set_header_seconds(10);
  t.set_upload_idle_seconds(30);
  t.set_send_stall_seconds(60);
  t.set_max_request_seconds(3600);
  return t;
}

const absl::Time kStart = absl::FromUnixSeconds(1000000);

CallState Call(CallState::Phase phase) {
  CallState c;
  c.phase = phase;
  c.start = c.last_read = kStart;
  return c;
}

TEST(CallTimeoutsTest, TheHeaderMustComeInTime) {
  const CallState c = Call(CallState::Phase::kHeader);
  EXPECT_TRUE(ExpiredTimeout(Limits(), c, kStart + absl::Seconds(9)).ok());
  const absl::Status s = ExpiredTimeout(Limits(), c, kStart + absl::Seconds(11));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("no RequestHeader within 10 s"), absl::string_view::npos) << s;
}

TEST(CallTimeoutsTest, AnUploadMustNotPauseLongerThanTheIdleLimit) {
  CallState c = Call(CallState::Phase::kReceiving);
  c.last_read = kStart + absl::Seconds(100);  // reading steadily, long after the header limit
  EXPECT_TRUE(ExpiredTimeout(Limits(), c, kStart + absl::Seconds(129)).ok());
  const absl::Status s = ExpiredTimeout(Limits(), c, kStart + absl::Seconds(131));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("no input for 30 s"), absl::string_view::npos) << s;
}

TEST(CallTimeoutsTest, ProcessingIsBoundOnlyByTheWholeRequestLimit) {
  const CallState c = Call(CallState::Phase::kProcessing);
  EXPECT_TRUE(ExpiredTimeout(Limits(), c, kStart + absl::Seconds(3599)).ok());
  const absl::Status s = ExpiredTimeout(Limits(), c, kStart + absl::Seconds(3601));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("limit of 3600 s"), absl::string_view::npos) << s;
}

TEST(CallTimeoutsTest, AWriteTheClientDoesNotTakeStallsEvenADecidedCall) {
  CallState c = Call(CallState::Phase::kProcessing);
  c.decided = true;
  c.write_started = kStart + absl::Seconds(5000);
  EXPECT_TRUE(ExpiredTimeout(Limits(), c, kStart + absl::Seconds(5059)).ok());  // past max_request: decided
  const absl::Status s = ExpiredTimeout(Limits(), c, kStart + absl::Seconds(5061));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("did not read its results for 60 s"), absl::string_view::npos) << s;
  c.write_started = absl::InfinitePast();  // nothing in flight
  EXPECT_TRUE(ExpiredTimeout(Limits(), c, kStart + absl::Seconds(99999)).ok());
}

}  // namespace
}  // namespace upp::server
