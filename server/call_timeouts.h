// The timeouts of one Segment call, as one decision the watchdog asks for:
// which limit of `timeouts` (header, upload idle, send stall, whole request)
// a call in the state `call` has passed at `now`, as the status the call
// ends with. A plain function, so every limit is tested without a clock or
// a server (tests/server/call_timeouts_test.cc).
#ifndef UPP_SERVER_CALL_TIMEOUTS_H_
#define UPP_SERVER_CALL_TIMEOUTS_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

struct CallState {
  enum class Phase { kHeader, kReceiving, kProcessing };
  Phase phase = Phase::kHeader;
  bool decided = false;  // the call's end is decided (results complete or failed)
  absl::Time start;      // the stream opened
  absl::Time last_read;  // the last message read
  // The write in flight started; InfinitePast when none is in flight.
  absl::Time write_started = absl::InfinitePast();
};

// OK while the call is within every limit; else DEADLINE_EXCEEDED naming the
// limit. A decided call is past every limit but the send stall (a client
// that does not read its last message must not hold the call).
absl::Status ExpiredTimeout(const unetrpp::v1::Timeouts& timeouts, const CallState& call, absl::Time now);

}  // namespace upp::server

#endif  // UPP_SERVER_CALL_TIMEOUTS_H_
