#include "gateway/stow_rs.h"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/bounded_task_queue.h"
#include "gateway/dicom_classes.h"
#include "gateway/series.h"
#include "gateway/wado_client.h"
#include "server/auth.h"

namespace upp::gateway {
namespace {

std::string JsonUid(const std::string& tag, const std::string& uid) {
  return absl::StrCat("\"", tag, "\":{\"vr\":\"UI\",\"Value\":[\"", uid, "\"]}");
}

// A part's UIDs as the response may quote them: UIDs only (digits and
// dots), so nothing a sender wrote reaches the JSON unchecked.
void AddUids(std::string& item, const StowPart& p) {
  if (IsValidUid(p.sop_class_uid)) absl::StrAppend(&item, JsonUid("00081150", p.sop_class_uid), ",");
  if (IsValidUid(p.sop_instance_uid)) absl::StrAppend(&item, JsonUid("00081155", p.sop_instance_uid), ",");
}

// RetrieveURL (0008,1190), Type 2 in the store response and in each
// ReferencedSOPSequence item (PS3.18 Table I.1-1): present, and empty, as
// the gateway serves no WADO-RS retrieve (an instance stays only until its
// series is answered); a URL would answer 404.
constexpr char kEmptyRetrieveUrl[] = "\"00081190\":{\"vr\":\"UR\"}";

void RemoveFile(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

// A POST /pull body: three short fields, so a few KiB is plenty; more is
// not a pull request and is not read.
constexpr size_t kMaxPullBodyBytes = 4096;
// A pull whose source answered with no instance (404, no reason word).
constexpr char kSentNoInstance[] = "the source sent no instance";
// A pull of which the gateway's own spool refused an instance for now (full,
// or a write failing): 503, reason word spool_refused.
constexpr char kSpoolRefused[] =
    "the gateway's spool cannot take the instances now (full or failing): pull again later";

// A part refused by the spool for now rather than for what it is: the
// same series may be stored later. (too_large is the configured
// max_instance_bytes: for good.)
bool RefusedForNow(const StowPart& part) { return part.outcome == "spool_full" || part.outcome == "spool_error"; }

// Why a pull failed, as its log line says it: a fixed word per status,
// never the answer's text (built from what the source sent and what the
// caller asked for).
const char* PullFailure(const absl::Status& status) {
  if (IsSpoolRefusal(status)) return "spool_refused";
  switch (status.code()) {
    case absl::StatusCode::kNotFound: return "not_found";
    case absl::StatusCode::kDeadlineExceeded: return "source_timeout";
    case absl::StatusCode::kUnavailable: return "source_unavailable";
    case absl::StatusCode::kResourceExhausted: return "too_large";
    case absl::StatusCode::kFailedPrecondition:
      return "source_refused";  // another HTTP status, or not multipart/related of DICOM
    case absl::StatusCode::kInvalidArgument: return "malformed_answer";
    default: return "source_error";
  }
}

}  // namespace

absl::Status SpoolRefusedError() { return absl::UnavailableError(kSpoolRefused); }

bool IsSpoolRefusal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable && status.message() == kSpoolRefused;
}

StowRequest::StowRequest(Spool* spool, const StowLimits& limits, std::string study_uid, bool dicom_by_default)
    : spool_(spool), limits_(limits), study_uid_(std::move(study_uid)), dicom_by_default_(dicom_by_default) {}

StowRequest::~StowRequest() {
  if (!settled_) Abort();
}

void StowRequest::CloseCurrent() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  if (arriving_) {
    spool_->InstanceDone();
    arriving_ = false;
  }
}

void StowRequest::FailCurrent(uint16_t reason, const char* outcome) {
  CloseCurrent();
  if (!current_.path.empty()) RemoveFile(current_.path);
  current_.path.clear();
  current_.failure = reason;
  current_.outcome = outcome;
}

absl::Status StowRequest::BeginPart(absl::string_view content_type) {
  current_ = StowPart();
  in_part_ = true;
  part_bytes_ = 0;
  const std::string media = MediaType(content_type);
  if (media != "application/dicom" && !(media.empty() && dicom_by_default_)) {
    FailCurrent(kStowCannotUnderstand, "invalid");  // its bytes are read and dropped
    return absl::OkStatus();
  }
  arriving_ = true;
  if (!spool_->InstanceArriving(limits_.max_instance_bytes, limits_.min_free_spool_bytes)) {
    FailCurrent(kStowOutOfResources, "spool_full");
    return absl::OkStatus();
  }
  current_.path = spool_->IncomingPath();
  fd_ = open(current_.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd_ < 0) FailCurrent(kStowOutOfResources, "spool_error");
  return absl::OkStatus();
}

absl::Status StowRequest::PartData(absl::string_view data) {
  if (fd_ < 0) return absl::OkStatus();  // a part already failed: dropped
  part_bytes_ += data.size();            // 64-bit: a piece is at most a buffer's size
  if (part_bytes_ > limits_.max_instance_bytes) {
    FailCurrent(kStowOutOfResources, "too_large");
    return absl::OkStatus();
  }
  while (!data.empty()) {
    const ssize_t n = write(fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      FailCurrent(kStowOutOfResources, "spool_error");
      return absl::OkStatus();
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status StowRequest::EndPart() {
  const bool written = fd_ >= 0;
  CloseCurrent();
  in_part_ = false;
  if (written) {
    auto header = ReadInstanceHeader(current_.path, static_cast<int64_t>(limits_.max_instance_bytes));
    if (!header.ok()) {
      FailCurrent(kStowCannotUnderstand, "invalid");
    } else {
      current_.sop_class_uid = header->sop_class_uid;
      current_.sop_instance_uid = header->sop_instance_uid;
      current_.series_uid = header->series_instance_uid;
      if (!IsAcceptedStorageClass(header->sop_class_uid)) {
        FailCurrent(kStowSopClassNotSupported, "not_allowed");
      } else if (!IsAcceptedTransferSyntax(header->transfer_syntax_uid)) {
        FailCurrent(kStowTransferSyntaxNotSupported, "not_allowed");
      } else if (!IsValidUid(header->series_instance_uid) || !IsValidUid(header->sop_instance_uid) ||
                 (!study_uid_.empty() && header->study_instance_uid != study_uid_) ||
                 (!series_uid_.empty() && header->series_instance_uid != series_uid_)) {
        FailCurrent(kStowDataSetMismatch, "invalid");
      }
    }
  }
  parts_.push_back(std::move(current_));
  current_ = StowPart();
  return absl::OkStatus();
}

void StowRequest::Abort() {
  settled_ = true;
  if (in_part_) FailCurrent(kStowOutOfResources, "spool_error");
  in_part_ = false;
  for (auto& p : parts_)
    if (!p.path.empty()) {
      RemoveFile(p.path);
      p.path.clear();
    }
}

void StowRequest::Commit() {
  settled_ = true;
  if (in_part_) FailCurrent(kStowOutOfResources, "spool_error");  // not reached: Finish() refuses
  in_part_ = false;
  for (auto& p : parts_) {
    if (p.path.empty() || p.failure != 0) continue;
    if (!spool_->Commit(p.path, p.series_uid, p.sop_instance_uid).ok()) {
      RemoveFile(p.path);
      p.failure = kStowOutOfResources;
      p.outcome = "spool_error";
    } else {
      p.outcome = "stored";
    }
    p.path.clear();
  }
}

StowResponse MakeStowResponse(const std::vector<StowPart>& parts) {
  std::string referenced, failed;
  int stored = 0;
  for (const auto& p : parts) {
    std::string item = "{";
    AddUids(item, p);
    if (p.failure == 0) {
      ++stored;
      absl::StrAppend(&referenced, referenced.empty() ? "" : ",", item, kEmptyRetrieveUrl, "}");
    } else {
      absl::StrAppend(&item, "\"00081197\":{\"vr\":\"US\",\"Value\":[", p.failure, "]}}");
      absl::StrAppend(&failed, failed.empty() ? "" : ",", item);
    }
  }
  StowResponse r;
  r.json = absl::StrCat("{", kEmptyRetrieveUrl);
  if (!failed.empty()) absl::StrAppend(&r.json, ",\"00081198\":{\"vr\":\"SQ\",\"Value\":[", failed, "]}");
  if (!referenced.empty()) absl::StrAppend(&r.json, ",\"00081199\":{\"vr\":\"SQ\",\"Value\":[", referenced, "]}");
  r.json += "}";
  r.http_status = failed.empty() ? 200 : stored > 0 ? 202 : 409;
  return r;
}

// One request: who, what, then the body streamed through the multipart
// reader into a StowRequest.
struct StowServer::Handler {
  StowServer* server;

  static void Refuse(httplib::Response& res, int status, const std::string& message) {
    res.status = status;
    res.set_content(message + "\n", "text/plain");
  }

  void operator()(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                  const std::string& study_uid) const {
    const absl::Time start = absl::Now();
    Serve(req, res, reader, study_uid, start);
    if (server->on_request_) server->on_request_("studies", res.status);
    spdlog::info("dicomweb: STOW-RS from {}: HTTP {} in {:.2f} s", req.remote_addr, res.status,
                 absl::ToDoubleSeconds(absl::Now() - start));
  }

  void Serve(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
             const std::string& study_uid, absl::Time start) const {
    const auto& config = server->config_;
    if (!server->Admit(req, res, server::kPermDicomStore, /*anonymous_may=*/true)) return;
    if (req.has_header("Content-Encoding") && req.get_header_value("Content-Encoding") != "identity")
      return Refuse(res, 415, "no Content-Encoding is accepted");
    auto type = ParseMultipartRelated(req.get_header_value("Content-Type"));
    if (!type.ok())
      return Refuse(res, type.status().code() == absl::StatusCode::kFailedPrecondition ? 415 : 400,
                    std::string(type.status().message()));
    if (req.has_header("Content-Length")) {
      uint64_t declared = 0;
      if (!absl::SimpleAtoi(req.get_header_value("Content-Length"), &declared))
        return Refuse(res, 400, "Content-Length is not a number");
      if (declared > config.max_request_bytes())
        return Refuse(res, 413, absl::StrCat("the body is over ", config.max_request_bytes(), " bytes"));
    }

    StowRequest request(server->spool_, server->limits_, study_uid, type->type == "application/dicom");
    MultipartReader body(type->boundary, &request);
    uint64_t received = 0;
    const absl::Time deadline = start + absl::Seconds(config.max_request_seconds());
    int cut_status = 0;
    absl::Status body_error;
    const bool read = reader([&](const char* data, size_t n) {
      received += n;
      if (received > config.max_request_bytes()) {
        cut_status = 413;
        return false;
      }
      if (absl::Now() > deadline) {
        cut_status = 408;
        return false;
      }
      body_error = body.Feed(absl::string_view(data, n));
      return body_error.ok();
    });
    if (cut_status == 413) {
      request.Abort();
      return Refuse(res, 413, absl::StrCat("the body is over ", config.max_request_bytes(), " bytes"));
    }
    if (cut_status == 408) {
      request.Abort();
      return Refuse(res, 408, "the request took longer than dicomweb.max_request_seconds");
    }
    if (!body_error.ok()) {
      request.Abort();
      return Refuse(res, 400, std::string(body_error.message()));
    }
    if (!read) {
      request.Abort();
      return Refuse(res, 400, "the body could not be read whole");
    }
    if (auto s = body.Finish(); !s.ok()) {
      request.Abort();
      return Refuse(res, 400, std::string(s.message()));
    }
    if (request.parts().empty()) {
      request.Abort();
      return Refuse(res, 400, "the body has no parts");
    }
    request.Commit();
    if (server->on_instance_)
      for (const auto& p : request.parts()) server->on_instance_("stow-rs", p.outcome);
    const StowResponse answer = MakeStowResponse(request.parts());
    res.status = answer.http_status;
    res.set_content(answer.json, "application/dicom+json");
  }
};

bool StowServer::Admit(const httplib::Request& req, httplib::Response& res, const char* permission,
                       bool anonymous_may) const {
  if (anonymous_may && allow_anonymous_ && !req.has_header("Authorization")) return true;
  auto principal = auth_->AuthenticateBearer(req.get_header_value("Authorization"));
  if (!principal.ok() || (!anonymous_may && !principal->authenticated)) {
    res.set_header("WWW-Authenticate", "Bearer realm=\"unetrpp-dicom-gateway\"");
    Handler::Refuse(res, 401,
                    principal.ok() ? absl::StrCat("the permission \"", permission, "\" needs a credential")
                                   : std::string(principal.status().message()));
    return false;
  }
  if (principal->authenticated && !principal->Has(permission)) {
    Handler::Refuse(res, 403, absl::StrCat("the credential lacks the permission \"", permission, "\""));
    return false;
  }
  return true;
}

// POST /pull: the study or series fetched from a configured source by
// WADO-RS into a StowRequest, then answered like a store request. What to
// fetch comes in the body (application/x-www-form-urlencoded), never in the
// URL: proxies and ingress access logs record URLs, and UIDs are patient
// data.
struct StowServer::PullHandler {
  StowServer* server;

  void operator()(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) const {
    const absl::Time start = absl::Now();
    std::string source_name = "-";  // a configured name, or "-": nothing a caller wrote reaches the log
    const char* failure = nullptr;  // set when the source failed
    int instances = 0;
    Serve(req, res, reader, start, source_name, failure, instances);
    if (server->on_request_) server->on_request_("pull", res.status);
    spdlog::info("dicomweb: pull from source {} for {}: HTTP {}{}, {} instances stored, in {:.2f} s", source_name,
                 req.remote_addr, res.status, failure ? absl::StrCat(" (", failure, ")") : "", instances,
                 absl::ToDoubleSeconds(absl::Now() - start));
  }

  void Serve(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
             absl::Time start, std::string& source_name, const char*& failure, int& instances) const {
    const auto& config = server->config_;
    if (!server->Admit(req, res, server::kPermDicomPull, /*anonymous_may=*/false)) return;
    if (!req.params.empty())
      return Handler::Refuse(res, 400,
                             "POST /pull takes source=, study= and series= in its body "
                             "(application/x-www-form-urlencoded), not in the URL: URLs are logged, UIDs must not be");
    if (MediaType(req.get_header_value("Content-Type")) != "application/x-www-form-urlencoded")
      return Handler::Refuse(res, 415, "POST /pull takes an application/x-www-form-urlencoded body");
    std::string body;
    bool over = false;
    const bool read = reader([&body, &over](const char* data, size_t n) {
      over = body.size() + n > kMaxPullBodyBytes;
      if (!over) body.append(data, n);
      return !over;
    });
    if (over) return Handler::Refuse(res, 413, absl::StrCat("the body is over ", kMaxPullBodyBytes, " bytes"));
    if (!read) return Handler::Refuse(res, 400, "the body could not be read whole");
    httplib::Params form;
    httplib::detail::parse_query_text(body, form);  // cpp-httplib's own decoding, as for a URL's query
    for (const char* field : {"source", "study", "series"})
      if (form.count(field) > 1) return Handler::Refuse(res, 400, absl::StrCat(field, "= is given more than once"));
    auto value = [&form](const char* field) {
      auto it = form.find(field);
      return it == form.end() ? std::string() : it->second;
    };
    const std::string name = value("source");
    int index = -1;
    for (int i = 0; i < config.sources_size(); ++i)
      if (config.sources(i).name() == name) index = i;
    if (index < 0) return Handler::Refuse(res, 400, "source= names no source in dicomweb.sources");
    source_name = name;
    const std::string study = value("study");
    const std::string series = value("series");
    if (!IsValidUid(study)) return Handler::Refuse(res, 400, "study= must be a StudyInstanceUID");
    if (form.count("series") > 0 && !IsValidUid(series))
      return Handler::Refuse(res, 400, "series= must be a SeriesInstanceUID");

    StowRequest request(server->spool_, server->limits_, study, /*dicom_by_default=*/true);
    const absl::Status fetched = server->FetchInto(
        index, study, series, absl::Seconds(config.max_request_seconds()) - (absl::Now() - start), request);
    if (fetched.code() == absl::StatusCode::kNotFound && fetched.message() == kSentNoInstance)
      return Handler::Refuse(res, 404, kSentNoInstance);
    if (IsSpoolRefusal(fetched)) {
      // Our side, not the source's: the caller may try again once the
      // spool has drained (series are answered and deleted).
      failure = PullFailure(fetched);
      res.set_header("Retry-After", "60");
      return Handler::Refuse(res, 503, std::string(fetched.message()));
    }
    if (!fetched.ok()) {
      const int status = fetched.code() == absl::StatusCode::kNotFound           ? 404
                         : fetched.code() == absl::StatusCode::kDeadlineExceeded ? 504
                                                                                 : 502;
      failure = PullFailure(fetched);
      return Handler::Refuse(res, status, std::string(fetched.message()));
    }
    for (const auto& p : request.parts())
      if (p.failure == 0) ++instances;
    const StowResponse answer = MakeStowResponse(request.parts());
    res.status = answer.http_status;
    res.set_content(answer.json, "application/dicom+json");
  }
};

absl::Status StowServer::FetchInto(int index, const std::string& study, const std::string& series,
                                   absl::Duration max_time, StowRequest& request) const {
  request.RequireSeries(series);
  WadoLimits limits;
  limits.max_bytes = config_.max_request_bytes();
  limits.max_time = max_time;
  const absl::Status fetched =
      FetchWadoRs(config_.sources(index).service(), absl::StrCat("dicomweb.sources[", index, "].service"), study,
                  series, limits, &request);
  if (!fetched.ok()) {
    request.Abort();
    return fetched;
  }
  if (request.parts().empty()) {
    request.Abort();
    return absl::NotFoundError(kSentNoInstance);
  }
  // An instance the spool refused for now would leave part of the series,
  // processed as if whole once the quiet period passed, and a pull that
  // looked done (the poll would never fetch the series again): the pull
  // keeps nothing and fails, to be tried again. The refused instances are
  // counted (the operator's sign of a full spool), the others were not kept.
  const auto& parts = request.parts();
  if (std::any_of(parts.begin(), parts.end(), RefusedForNow)) {
    for (const auto& p : parts)
      if (on_instance_ && p.failure != 0) on_instance_("wado-rs", p.outcome);
    request.Abort();
    return SpoolRefusedError();
  }
  request.Commit();
  for (const auto& p : parts)
    if (on_instance_) on_instance_("wado-rs", p.outcome);
  // A commit failing (a rename in the spool: rare) leaves the instances
  // committed before it; the pull is tried again all the same, and its
  // instances are then stored over them.
  if (std::any_of(parts.begin(), parts.end(), RefusedForNow)) return SpoolRefusedError();
  return absl::OkStatus();
}

absl::StatusOr<int> StowServer::Pull(int index, const std::string& study, const std::string& series) {
  if (index < 0 || index >= config_.sources_size()) return absl::InvalidArgumentError("no such source");
  const absl::Time start = absl::Now();
  StowRequest request(spool_, limits_, study, /*dicom_by_default=*/true);
  const absl::Status fetched = FetchInto(index, study, series, absl::Seconds(config_.max_request_seconds()), request);
  int instances = 0;
  for (const auto& p : request.parts())
    if (p.failure == 0 && fetched.ok()) ++instances;
  // As POST /pull's line, "poll" in place of the caller's address.
  spdlog::info("dicomweb: pull from source {} for poll: {}, {} instances stored, in {:.2f} s",
               config_.sources(index).name(), fetched.ok() ? "ok" : PullFailure(fetched), instances,
               absl::ToDoubleSeconds(absl::Now() - start));
  if (!fetched.ok()) return fetched;
  return instances;
}

absl::StatusOr<std::unique_ptr<StowServer>> StowServer::Create(const unetrpp::v1::GatewayConfig& config, Spool* spool,
                                                               InstanceCallback on_instance,
                                                               RequestCallback on_request) {
  std::unique_ptr<StowServer> s(new StowServer());
  s->config_ = config.dicomweb();
  s->limits_.max_instance_bytes = config.listener().max_instance_bytes();
  s->limits_.min_free_spool_bytes = config.listener().min_free_spool_bytes();
  s->spool_ = spool;
  s->on_instance_ = std::move(on_instance);
  s->on_request_ = std::move(on_request);
  auto auth = server::Authenticator::Create(s->config_.auth());
  if (!auth.ok()) return absl::InvalidArgumentError(absl::StrCat("dicomweb.", auth.status().message()));
  s->auth_ = *std::move(auth);
  s->allow_anonymous_ = s->config_.auth().allow_anonymous() && !s->config_.auth().required();

  const auto& tls = s->config_.tls();
  if (tls.cert_file().empty()) {
    s->http_ = std::make_unique<httplib::Server>();
  } else {
    auto https = std::make_unique<httplib::SSLServer>([&tls](SSL_CTX& ctx) {
      SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
      if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) return false;
      if (SSL_CTX_use_certificate_chain_file(&ctx, tls.cert_file().c_str()) != 1) return false;
      if (SSL_CTX_use_PrivateKey_file(&ctx, tls.key_file().c_str(), SSL_FILETYPE_PEM) != 1) return false;
      if (SSL_CTX_check_private_key(&ctx) != 1) return false;
      if (!tls.ca_file().empty()) {
        if (SSL_CTX_load_verify_locations(&ctx, tls.ca_file().c_str(), nullptr) != 1) return false;
        SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      }
      return true;
    });
    if (!https->is_valid())
      return absl::InvalidArgumentError(
          "dicomweb.tls: the certificate, key or CA file cannot be loaded (or the key does not match)");
    s->http_ = std::move(https);
  }
  auto& http = *s->http_;
  const size_t threads = s->config_.max_connections();
  const size_t queued = s->config_.max_queued_connections();
  http.new_task_queue = [threads, queued] { return new BoundedTaskQueue(threads, queued); };
  // One request per connection: a body refused unread, or cut off, is never
  // read as the next request.
  http.set_keep_alive_max_count(1);
  const auto idle = std::chrono::duration<double>(s->config_.idle_seconds());
  http.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(idle));
  http.set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(idle));
  // A new connection's first bytes are awaited for the keep-alive timeout
  // (cpp-httplib: 5 s by default), not the read timeout: idle_seconds too,
  // in whole seconds, so that a silent connection holds a thread as long as
  // the configuration says.
  http.set_keep_alive_timeout(static_cast<time_t>(std::max(1.0, std::ceil(s->config_.idle_seconds()))));
  http.set_payload_max_length(s->config_.max_request_bytes());
  StowServer* self = s.get();
  http.Post(R"(/studies)", [self](const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) { Handler{self}(req, res, reader, ""); });
  http.Post(R"(/studies/([0-9.]{1,64}))",
            [self](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
              Handler{self}(req, res, reader, req.matches[1].str());
            });
  http.Post("/pull", [self](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    PullHandler{self}(req, res, reader);
  });
  return s;
}

StowServer::~StowServer() = default;

absl::Status StowServer::Bind() {
  const std::string& address = config_.address();
  if (config_.port() == 0) {
    port_ = http_->bind_to_any_port(address);
    if (port_ <= 0) return absl::UnavailableError(absl::StrCat("dicomweb: cannot listen on ", address));
  } else {
    if (!http_->bind_to_port(address, static_cast<int>(config_.port())))
      return absl::UnavailableError(absl::StrCat("dicomweb: cannot listen on ", address, ":", config_.port()));
    port_ = static_cast<int>(config_.port());
  }
  return absl::OkStatus();
}

absl::Status StowServer::Run() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::OkStatus();
    running_ = true;
  }
  http_->listen_after_bind();
  absl::MutexLock lock(&mu_);
  running_ = false;
  return absl::OkStatus();
}

// cpp-httplib's stop() does nothing before its loop has begun: a Stop()
// right after Run() was started waits for the loop, so that it is never
// left listening.
void StowServer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (!running_) return;
    }
    if (http_->is_running()) {
      http_->stop();
      return;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
}

}  // namespace upp::gateway
