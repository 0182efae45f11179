#include "server/call_timeouts.h"

#include "absl/strings/str_cat.h"

namespace upp::server {

absl::Status ExpiredTimeout(const unetrpp::v1::Timeouts& t, const CallState& call, absl::Time now) {
  auto over = [now](absl::Time since, double seconds) { return now - since > absl::Seconds(seconds); };
  if (call.write_started != absl::InfinitePast() && over(call.write_started, t.send_stall_seconds()))
    return absl::DeadlineExceededError(
        absl::StrCat("the client did not read its results for ", t.send_stall_seconds(), " s"));
  if (call.decided) return absl::OkStatus();
  if (over(call.start, t.max_request_seconds()))
    return absl::DeadlineExceededError(
        absl::StrCat("the request ran longer than the server's limit of ", t.max_request_seconds(), " s"));
  if (call.phase == CallState::Phase::kHeader && over(call.start, t.header_seconds()))
    return absl::DeadlineExceededError(
        absl::StrCat("no RequestHeader within ", t.header_seconds(), " s of opening the stream"));
  if (call.phase == CallState::Phase::kReceiving && over(call.last_read, t.upload_idle_seconds()))
    return absl::DeadlineExceededError(
        absl::StrCat("no input for ", t.upload_idle_seconds(), " s; send InputChunks steadily, then EndOfInput"));
  return absl::OkStatus();
}

}  // namespace upp::server
