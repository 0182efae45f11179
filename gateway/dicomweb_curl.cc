#include "gateway/dicomweb_curl.h"

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "imageio/file_util.h"

namespace upp::gateway {
namespace {

constexpr int64_t kMaxCredentialBytes = 1 << 16;

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

absl::StatusOr<std::string> Credential(const std::string& path, const std::string& field) {
  auto text = imageio::ReadWholeFile(path, kMaxCredentialBytes);
  if (!text.ok()) return absl::UnavailableError(absl::StrCat(field, " cannot be read"));
  std::string value(absl::StripAsciiWhitespace(*text));
  for (char c : value)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return absl::FailedPreconditionError(absl::StrCat(field, " holds a control character"));
  return value;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DicomWebCall>> DicomWebCall::Create(const unetrpp::v1::DicomWebDestination& d,
                                                                   const std::string& field, const std::string& path,
                                                                   const std::vector<std::string>& headers) {
  InitCurlOnce();
  std::unique_ptr<DicomWebCall> call(new DicomWebCall());
  call->curl_.reset(curl_easy_init());
  if (!call->curl_) return absl::InternalError("libcurl: no handle");
  call->url_ = d.url();
  while (!call->url_.empty() && call->url_.back() == '/') call->url_.pop_back();
  call->url_ += path;
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  call->headers_.reset(list);
  if (!d.token_file().empty()) {
    auto token = Credential(d.token_file(), field + ".token_file");
    if (!token.ok()) return token.status();
    call->headers_.reset(
        curl_slist_append(call->headers_.release(), absl::StrCat("Authorization: Bearer ", *token).c_str()));
  } else if (!d.basic_auth_file().empty()) {
    auto pair = Credential(d.basic_auth_file(), field + ".basic_auth_file");
    if (!pair.ok()) return pair.status();
    if (pair->find(':') == std::string::npos)
      return absl::FailedPreconditionError(absl::StrCat(field, ".basic_auth_file must hold \"user:password\""));
    call->userpwd_ = *pair;
  }
  CURL* c = call->curl_.get();
  curl_easy_setopt(c, CURLOPT_URL, call->url_.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, call->headers_.get());
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  if (!d.ca_file().empty()) curl_easy_setopt(c, CURLOPT_CAINFO, d.ca_file().c_str());
  if (!call->userpwd_.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(c, CURLOPT_USERPWD, call->userpwd_.c_str());
  }
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(d.timeout_seconds() * 1000));
  return call;
}

DicomWebCall::~DicomWebCall() = default;

CURLcode DicomWebCall::Perform(long& http_status) {
  http_status = 0;
  const CURLcode rc = curl_easy_perform(curl_.get());
  curl_easy_getinfo(curl_.get(), CURLINFO_RESPONSE_CODE, &http_status);
  return rc;
}

}  // namespace upp::gateway
