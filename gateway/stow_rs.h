// The gateway's DICOMweb receiver, served by cpp-httplib (HTTP or HTTPS):
// STOW-RS (PS3.18 10.5), POST /studies and POST /studies/{StudyInstanceUID}
// with a multipart/related body of application/dicom parts; and pull mode,
// POST /pull with the body source=<name>&study=<uid>[&series=<uid>]
// (application/x-www-form-urlencoded: never in the URL, which proxies and
// access logs record; UIDs there are refused with 400), which fetches the
// study or series from a configured DICOMweb source by WADO-RS
// (gateway/wado_client.h) through the same StowRequest below. Each part
// is written to a spool file as it arrives (gateway/multipart.h), checked
// like a C-STORE instance (ReadInstanceHeader: structure check, UIDs; an
// accepted SOP class and transfer syntax: gateway/dicom_classes.h) under
// the same spool-space rule (Spool::InstanceArriving) and size limit
// (listener.max_instance_bytes), and committed to its series when the whole
// body has arrived. A request refused or cut off on the way (over
// dicomweb.max_request_bytes or max_request_seconds, a malformed body, a
// broken connection) leaves nothing in the spool.
//
// The answer is PS3.18's store response in DICOM JSON: ReferencedSOPSequence
// for the instances stored, FailedSOPSequence with a FailureReason (PS3.4
// C-STORE status codes) for the others; HTTP 200 when all were stored, 202
// when some, 409 when none. 400 malformed request or body, 401 no or an
// unknown credential, 403 a credential without the "dicom.store"
// permission, 408 over max_request_seconds, 413 over max_request_bytes,
// 415 not multipart/related of application/dicom (or a Content-Encoding).
// RetrieveURL (Type 2) is present and empty: the gateway keeps an instance
// only until its series is answered and serves no WADO-RS retrieve, so a
// URL would answer 404 (docs/gateway.md).
//
// POST /pull needs a credential with the permission "dicom.pull", whatever
// auth.allow_anonymous says (a pull spends the gateway's own archive
// credential on a study the caller names), and answers the same store
// response for the instances fetched (200, 202, 409), or 400 (no source of
// that name, UIDs that are not UIDs, parameters in the URL), 415 (another
// body type), 404 (the source has no such study or
// series, or sent no instance), 502 (the source failed, or its answer was
// malformed or over max_request_bytes), 503 with Retry-After (the
// gateway's spool refused an instance for now, full or failing: nothing
// of the pull is kept, as a part of a series would be processed as if
// whole), 504 (over max_request_seconds). Instances refused for good (not
// accepted, over max_instance_bytes, not of the series) are answered in
// the store response as STOW-RS answers them (202, 409).
// Synchronous: the answer comes when the instances are in the spool; the
// series is then processed as a stored one (quiet period, rules).
//
// Threading: Run() blocks in cpp-httplib's accept loop until Stop() (from
// any thread); requests run on dicomweb.max_connections threads, at most
// dicomweb.max_queued_connections accepted connections wait for one
// (gateway/bounded_task_queue.h). The spool must outlive Run().
#ifndef UPP_GATEWAY_STOW_RS_H_
#define UPP_GATEWAY_STOW_RS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gateway/multipart.h"
#include "gateway/spool.h"
#include "unetrpp/v1/gateway.pb.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib
namespace upp::server {
class Authenticator;
}

namespace upp::gateway {

// FailureReason values of a store response (PS3.18 10.5.3, PS3.4 B.2.3).
inline constexpr uint16_t kStowOutOfResources = 0xA700;
inline constexpr uint16_t kStowDataSetMismatch = 0xA900;  // also: not of the study the URL names
inline constexpr uint16_t kStowCannotUnderstand = 0xC000;
inline constexpr uint16_t kStowTransferSyntaxNotSupported = 0xC122;
inline constexpr uint16_t kStowSopClassNotSupported = 0x0122;

// One part of a request, as the response reports it.
struct StowPart {
  std::string sop_class_uid, sop_instance_uid;  // "" when not read (or not UIDs)
  uint16_t failure = 0;                         // 0: stored
  std::string outcome;  // for metrics: stored, invalid, too_large, not_allowed, spool_full, spool_error
  // Internal: the spool file and series while the request is under way.
  std::string path, series_uid;
};

// The limits a request's parts are held to.
struct StowLimits {
  uint64_t max_instance_bytes = uint64_t{1} << 30;
  uint64_t min_free_spool_bytes = uint64_t{1} << 30;
};

// The multipart sink of one request: each part to its own spool file, then
// checked. Separate from the server so that tests and the fuzz target can
// feed it bodies without a socket.
class StowRequest : public MultipartReader::Sink {
 public:
  // `study_uid`: the one the URL names ("" for POST /studies).
  // `dicom_by_default`: parts without a Content-Type are DICOM (the
  // request's type parameter said so).
  StowRequest(Spool* spool, const StowLimits& limits, std::string study_uid, bool dicom_by_default);
  ~StowRequest() override;  // Abort() unless committed
  // Pull mode: every instance must be of this series (A900 otherwise).
  void RequireSeries(std::string series_uid) { series_uid_ = std::move(series_uid); }

  absl::Status BeginPart(absl::string_view content_type) override;
  absl::Status PartData(absl::string_view data) override;
  absl::Status EndPart() override;

  // The request failed: every file of it is removed from the spool.
  void Abort();
  // The body arrived whole: each instance that passed is moved into its
  // series (Spool::Commit).
  void Commit();
  const std::vector<StowPart>& parts() const { return parts_; }

 private:
  void FailCurrent(uint16_t reason, const char* outcome);
  void CloseCurrent();

  Spool* const spool_;
  const StowLimits limits_;
  const std::string study_uid_;
  std::string series_uid_;  // "": any
  const bool dicom_by_default_;
  std::vector<StowPart> parts_;
  StowPart current_;
  bool in_part_ = false;
  int fd_ = -1;            // the current part's file, while it is written
  bool arriving_ = false;  // counted by Spool::InstanceArriving
  uint64_t part_bytes_ = 0;
  bool settled_ = false;  // committed or aborted
};

// The error StowServer::Pull returns when the spool refused an instance
// for now (full, or a write failing; nothing of the pull kept): UNAVAILABLE
// with a fixed message, and the test for it (the QIDO-RS poll does not
// count it against the series, and waits for its next search).
absl::Status SpoolRefusedError();
bool IsSpoolRefusal(const absl::Status& status);

// The JSON store response (application/dicom+json) and its HTTP status.
struct StowResponse {
  int http_status = 200;
  std::string json;
};
StowResponse MakeStowResponse(const std::vector<StowPart>& parts);

class StowServer {
 public:
  // Called for every part (transport "stow-rs" or "wado-rs", outcome as
  // StowPart::outcome) and every request (endpoint "studies" or "pull", its
  // HTTP status).
  using InstanceCallback = std::function<void(const std::string& transport, const std::string& outcome)>;
  using RequestCallback = std::function<void(const std::string& endpoint, int http_status)>;

  // Reads the TLS files and the credential sources; errors name the field.
  static absl::StatusOr<std::unique_ptr<StowServer>> Create(const unetrpp::v1::GatewayConfig& config, Spool* spool,
                                                            InstanceCallback on_instance, RequestCallback on_request);
  ~StowServer();

  // Binds dicomweb.address:port (port 0: one is picked, see port()).
  absl::Status Bind();
  // Serves until Stop(); Bind() first. Returns at once after a Stop().
  absl::Status Run();
  void Stop();
  int port() const { return port_; }

  // Pull mode without a caller (the QIDO-RS poll, gateway/qido_poll.h):
  // what POST /pull does for source `index`, held to max_request_bytes and
  // max_request_seconds. The instances stored (0 when all were refused for
  // good: the series will not be stored by pulling it again), or why the
  // pull failed (nothing is kept then; NOT_FOUND also when the source sent
  // none; UNAVAILABLE also when the spool refused an instance for now, full
  // or failing, worth trying again later).
  absl::StatusOr<int> Pull(int index, const std::string& study, const std::string& series);

 private:
  StowServer() = default;
  struct Handler;
  struct PullHandler;
  // Whether the request's credential (or anonymity, where allowed and
  // `anonymous_may`) grants `permission`; if not, `res` holds the refusal
  // (401, 403).
  bool Admit(const httplib::Request& req, httplib::Response& res, const char* permission, bool anonymous_may) const;
  // Fetches from source `index` by WADO-RS into `request` and commits it,
  // counting each part; on failure the request is aborted.
  absl::Status FetchInto(int index, const std::string& study, const std::string& series, absl::Duration max_time,
                         StowRequest& request) const;

  unetrpp::v1::DicomWebListener config_;
  StowLimits limits_;
  Spool* spool_ = nullptr;
  InstanceCallback on_instance_;
  RequestCallback on_request_;
  std::unique_ptr<server::Authenticator> auth_;
  bool allow_anonymous_ = false;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // in Run()
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_STOW_RS_H_
