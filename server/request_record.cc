#include "server/request_record.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/logging.h"
#include "server/metrics.h"

namespace upp::server {
namespace {

// The stages in the order of Metrics::StageNames(), those measured only.
template <typename Fn>
void ForEachStage(const FinishedRequest& r, Fn fn) {
  for (const std::string& stage : Metrics::StageNames())
    if (const auto it = r.stage_seconds.find(stage); it != r.stage_seconds.end()) fn(stage, it->second);
}

std::string StatusText(const FinishedRequest& r) {
  // The status message as the client got it: the server's messages name no
  // patient data (no DICOM values or UIDs; counts and file numbers).
  return r.status.ok() ? "" : LoggableMessage(std::string(r.status.message()));
}

}  // namespace

std::string LoggableId(const std::string& id) {
  if (id.empty() || id.size() > 64) return id.empty() ? "-" : "<long>";
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return "<redacted>";
  return id;
}

nlohmann::ordered_json RequestLogFields(const FinishedRequest& r) {
  nlohmann::ordered_json stages = nlohmann::ordered_json::object();
  ForEachStage(r, [&](const std::string& stage, double seconds) { stages[stage] = seconds; });
  nlohmann::ordered_json fields{{"message", "request finished"},
                                {"request_id", r.request_id},
                                {"client_request_id", LoggableId(r.client_request_id)},
                                {"model", r.model},
                                {"peer", r.peer},
                                {"voxels", r.voxels},
                                {"windows", r.windows},
                                {"windows_skipped", r.windows_skipped},
                                {"mode", r.mode},
                                {"seconds", r.seconds},
                                {"stage_seconds", stages},
                                {"status", absl::StatusCodeToString(r.status.code())}};
  if (!r.status.ok()) fields["status_message"] = StatusText(r);
  if (!r.trace_id.empty()) fields["trace_id"] = r.trace_id;
  return fields;
}

static std::string UntracedLogText(const FinishedRequest& r) {
  std::string timings;
  ForEachStage(r, [&](const std::string& stage, double seconds) {
    absl::StrAppend(&timings, timings.empty() ? "" : " ", stage, "=", absl::StrFormat("%.3f", seconds));
  });
  return absl::StrFormat(
      "request %s client_id=%s model=%s mode=%s peer=%s voxels=%d windows=%d skipped=%d seconds=%.3f [%s] "
      "status=%s%s",
      r.request_id, LoggableId(r.client_request_id), r.model, r.mode, r.peer, r.voxels, r.windows, r.windows_skipped,
      r.seconds, timings, absl::StatusCodeToString(r.status.code()), r.status.ok() ? "" : ": " + StatusText(r));
}

// The line, and the trace id where the call is traced: a log line and its
// trace find each other.
std::string RequestLogText(const FinishedRequest& r) {
  std::string text = UntracedLogText(r);
  if (!r.trace_id.empty()) absl::StrAppend(&text, " trace_id=", r.trace_id);
  return text;
}

nlohmann::json AuditRecord(const FinishedRequest& r, absl::Time now) {
  nlohmann::json record{{"time", absl::FormatTime(absl::RFC3339_full, now, absl::UTCTimeZone())},
                        {"principal", r.principal},
                        {"peer", r.peer},
                        {"method", "Segment"},
                        {"model", r.model},
                        {"request_id", r.request_id},
                        {"input_bytes", r.input_bytes},
                        {"windows", r.windows},
                        {"status", absl::StatusCodeToString(r.status.code())},
                        {"seconds", r.seconds}};
  if (!r.trace_id.empty()) record["trace_id"] = r.trace_id;
  return record;
}

}  // namespace upp::server
