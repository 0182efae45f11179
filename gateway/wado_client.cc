#include "gateway/wado_client.h"

#include <algorithm>
#include <cstdint>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/dicomweb_curl.h"

namespace upp::gateway {
namespace {
// How far our clock may trail libcurl's when its total timeout fires.
constexpr absl::Duration kCurlClockSlack = absl::Milliseconds(50);
}  // namespace
namespace {

// The state of one response while it arrives.
struct Receive {
  CURL* curl = nullptr;
  MultipartReader::Sink* sink = nullptr;
  uint64_t max_bytes = 0;
  uint64_t received = 0;
  std::unique_ptr<MultipartReader> reader;  // once the headers said multipart/related
  bool other_answer = false;                // not 200: its body is read and dropped
  absl::Status error;                       // why the transfer was stopped
};

size_t OnData(char* data, size_t size, size_t count, void* user) {
  auto& r = *static_cast<Receive*>(user);
  const size_t n = size * count;
  r.received += n;  // 64-bit: a piece is at most libcurl's buffer
  if (r.received > r.max_bytes) {
    r.error = absl::ResourceExhaustedError(absl::StrCat("the source's answer is over ", r.max_bytes, " bytes"));
    return 0;  // libcurl stops the transfer
  }
  if (!r.reader && !r.other_answer) {
    // The headers have all come before the first byte of the body.
    long code = 0;
    curl_easy_getinfo(r.curl, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) {
      r.other_answer = true;
    } else {
      char* type = nullptr;
      curl_easy_getinfo(r.curl, CURLINFO_CONTENT_TYPE, &type);
      auto parsed = ParseMultipartRelated(type ? type : "");
      if (!parsed.ok()) {
        r.error = absl::FailedPreconditionError(absl::StrCat(
            "the source's answer is not multipart/related of application/dicom: ", parsed.status().message()));
        return 0;
      }
      r.reader = std::make_unique<MultipartReader>(parsed->boundary, r.sink);
    }
  }
  if (r.other_answer) return n;
  if (auto s = r.reader->Feed(absl::string_view(data, n)); !s.ok()) {
    r.error = absl::InvalidArgumentError(absl::StrCat("the source's answer: ", s.message()));
    return 0;
  }
  return n;
}

}  // namespace

absl::Status FetchWadoRs(const unetrpp::v1::DicomWebDestination& source, const std::string& field,
                         const std::string& study_uid, const std::string& series_uid, const WadoLimits& limits,
                         MultipartReader::Sink* sink) {
  std::string path = absl::StrCat("/studies/", study_uid);
  if (!series_uid.empty()) absl::StrAppend(&path, "/series/", series_uid);
  auto call = DicomWebCall::Create(source, field, path,
                                   {"Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*"});
  if (!call.ok()) return call.status();
  CURL* c = (*call)->handle();
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  // No Accept-Encoding: the body is counted and parsed as it comes.
  Receive receive;
  receive.curl = c;
  receive.sink = sink;
  receive.max_bytes = limits.max_bytes;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnData);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &receive);
  // At least 1 ms: CURLOPT_TIMEOUT_MS 0 would mean no limit at all (a
  // request whose time is already spent).
  const int64_t max_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(limits.max_time));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(max_ms));
  long code = 0;
  const absl::Time start = absl::Now();
  const CURLcode rc = (*call)->Perform(code);
  if (!receive.error.ok()) return receive.error;
  // Timed out over max_time, whether before the headers (code 0) or during
  // the body; a connect timeout (the service's timeout_seconds, shorter)
  // is the source unreachable.
  // libcurl times max_ms on its own clock from inside the transfer, so ours
  // may read a little less when it fires (seen under load: UNAVAILABLE).
  if (rc == CURLE_OPERATION_TIMEDOUT && absl::Now() - start >= absl::Milliseconds(max_ms) - kCurlClockSlack)
    return absl::DeadlineExceededError("the source's answer took longer than dicomweb.max_request_seconds");
  if (rc != CURLE_OK) return absl::UnavailableError(absl::StrCat("the source: ", curl_easy_strerror(rc)));
  if (code == 404) return absl::NotFoundError("the source has no such study or series (HTTP 404)");
  const std::string what = absl::StrCat("the source answered HTTP ", code);
  if (code >= 500 || code == 408 || code == 429 || code == 401) return absl::UnavailableError(what);
  if (code != 200) return absl::FailedPreconditionError(what);
  if (!receive.reader) return absl::FailedPreconditionError("the source's answer has no body");
  if (auto s = receive.reader->Finish(); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the source's answer: ", s.message()));
  return absl::OkStatus();
}

}  // namespace upp::gateway
