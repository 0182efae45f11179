// The record of one finished Segment call: its log line (text, or JSON
// fields with --log-json) and its audit record. One place decides what of a
// request reaches the logs: ids, model, peer, counts and timings, the status
// as the client got it; never patient data (client-chosen ids only when they
// look like ids). Tested in tests/server/request_record_test.cc.
#ifndef UPP_SERVER_REQUEST_RECORD_H_
#define UPP_SERVER_REQUEST_RECORD_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace upp::server {

struct FinishedRequest {
  std::string request_id, client_request_id, model, peer, principal;
  int64_t input_bytes = 0, voxels = 0, windows = 0;
  double seconds = 0;
  std::map<std::string, double> stage_seconds;  // by Metrics::StageNames() name
  absl::Status status;
  // The call's W3C trace id (32 hex digits) when it is traced, else "".
  std::string trace_id = "";
  int64_t windows_skipped = 0;  // by the crop: they covered nothing it kept
  std::string mode = "full";    // speed_mode.h's name of the mode it ran in
};

// A client-chosen id as logs may show it: itself when it looks like an id,
// else "-" (empty), "<long>" or "<redacted>".
std::string LoggableId(const std::string& id);

// The log line's fields (JSON logs) and its text (plain logs).
nlohmann::ordered_json RequestLogFields(const FinishedRequest& r);
std::string RequestLogText(const FinishedRequest& r);
// The audit record: one JSON object (who, what, how much, the outcome).
nlohmann::json AuditRecord(const FinishedRequest& r, absl::Time now);

}  // namespace upp::server

#endif  // UPP_SERVER_REQUEST_RECORD_H_
