#include "gateway/stow_client.h"

#include <curl/curl.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "imageio/checked_math.h"
#include "imageio/file_util.h"

namespace upp::gateway {
namespace {

constexpr int64_t kMaxCredentialBytes = 1 << 16;

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string RandomBoundary() {
  std::random_device random;
  static const char kHex[] = "0123456789abcdef";
  std::string b = "upp-";
  for (int i = 0; i < 32; ++i) b.push_back(kHex[random() & 15]);
  return b;
}

// The body as a sequence of pieces: literal text, or a file's bytes.
struct Piece {
  std::string text;
  std::string path;  // set: a file
  int64_t size = 0;
};

struct Body {
  std::vector<Piece> pieces;
  size_t index = 0;
  int64_t offset = 0;
  std::FILE* file = nullptr;
  bool failed = false;
  ~Body() {
    if (file) std::fclose(file);
  }
};

size_t ReadBody(char* out, size_t size, size_t count, void* user) {
  auto& body = *static_cast<Body*>(user);
  const size_t want = size * count;
  while (body.index < body.pieces.size()) {
    const Piece& p = body.pieces[body.index];
    if (p.path.empty()) {
      const size_t n = std::min<size_t>(want, p.text.size() - static_cast<size_t>(body.offset));
      std::memcpy(out, p.text.data() + body.offset, n);
      body.offset += static_cast<int64_t>(n);
      if (body.offset == static_cast<int64_t>(p.text.size())) {
        ++body.index;
        body.offset = 0;
      }
      if (n > 0) return n;
      continue;
    }
    if (!body.file && !(body.file = std::fopen(p.path.c_str(), "rb"))) {
      body.failed = true;
      return CURL_READFUNC_ABORT;
    }
    const size_t n = std::fread(out, 1, std::min<int64_t>(static_cast<int64_t>(want), p.size - body.offset), body.file);
    body.offset += static_cast<int64_t>(n);
    if (n == 0 || body.offset == p.size) {
      std::fclose(body.file);
      body.file = nullptr;
      if (body.offset != p.size) {  // the file shrank under us
        body.failed = true;
        return CURL_READFUNC_ABORT;
      }
      ++body.index;
      body.offset = 0;
    }
    if (n > 0) return n;
  }
  return 0;
}

size_t DiscardResponse(char* /*data*/, size_t size, size_t count, void* user) {
  // Kept only up to a bound, and never logged: its length is all we use.
  *static_cast<int64_t*>(user) += static_cast<int64_t>(size * count);
  return size * count;
}

absl::StatusOr<std::string> Credential(const std::string& path, const char* field) {
  auto text = imageio::ReadWholeFile(path, kMaxCredentialBytes);
  if (!text.ok()) return absl::UnavailableError(absl::StrCat("destination.dicomweb.", field, " cannot be read"));
  std::string value(absl::StripAsciiWhitespace(*text));
  for (char c : value)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return absl::FailedPreconditionError(absl::StrCat("destination.dicomweb.", field, " holds a control character"));
  return value;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct ListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

absl::Status SendFilesStowRs(const unetrpp::v1::DicomWebDestination& d, const std::vector<std::string>& files) {
  InitCurlOnce();
  const std::string boundary = RandomBoundary();
  Body body;
  for (const auto& f : files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    if (ec) return absl::InternalError("a result to send cannot be read back");
    body.pieces.push_back({absl::StrCat("--", boundary, "\r\nContent-Type: application/dicom\r\n\r\n"), "", 0});
    body.pieces.push_back({"", f, static_cast<int64_t>(size)});
    body.pieces.push_back({"\r\n", "", 0});
  }
  body.pieces.push_back({absl::StrCat("--", boundary, "--\r\n"), "", 0});
  int64_t length = 0;
  for (const auto& p : body.pieces)
    length = imageio::OrMax(imageio::CheckedAdd(length, p.path.empty() ? static_cast<int64_t>(p.text.size()) : p.size));

  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return absl::InternalError("libcurl: no handle");
  std::string url = d.url();
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += "/studies";
  curl_slist* raw_headers = nullptr;
  raw_headers = curl_slist_append(
      raw_headers,
      absl::StrCat("Content-Type: multipart/related; type=\"application/dicom\"; boundary=", boundary).c_str());
  raw_headers = curl_slist_append(raw_headers, "Accept: application/dicom+json");
  raw_headers = curl_slist_append(raw_headers, "Expect:");  // no 100-continue round trip
  std::unique_ptr<curl_slist, ListDeleter> headers(raw_headers);
  std::string userpwd;
  if (!d.token_file().empty()) {
    auto token = Credential(d.token_file(), "token_file");
    if (!token.ok()) return token.status();
    headers.reset(curl_slist_append(headers.release(), absl::StrCat("Authorization: Bearer ", *token).c_str()));
  } else if (!d.basic_auth_file().empty()) {
    auto pair = Credential(d.basic_auth_file(), "basic_auth_file");
    if (!pair.ok()) return pair.status();
    if (pair->find(':') == std::string::npos)
      return absl::FailedPreconditionError("destination.dicomweb.basic_auth_file must hold \"user:password\"");
    userpwd = *pair;
  }
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_READFUNCTION, ReadBody);
  curl_easy_setopt(c, CURLOPT_READDATA, &body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(length));
  int64_t response_bytes = 0;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, DiscardResponse);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response_bytes);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  if (!d.ca_file().empty()) curl_easy_setopt(c, CURLOPT_CAINFO, d.ca_file().c_str());
  if (!userpwd.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(c, CURLOPT_USERPWD, userpwd.c_str());
  }
  const long timeout_ms = static_cast<long>(d.timeout_seconds() * 1000);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  const CURLcode rc = curl_easy_perform(c);
  if (body.failed) return absl::InternalError("a result to send cannot be read back");
  if (rc != CURLE_OK) return absl::UnavailableError(absl::StrCat("DICOMweb destination: ", curl_easy_strerror(rc)));
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code == 200) return absl::OkStatus();
  const std::string what = absl::StrCat("DICOMweb destination answered HTTP ", code);
  if (code >= 500 || code == 408 || code == 429 || code == 401) return absl::UnavailableError(what);
  if (code == 202 || code == 409) return absl::FailedPreconditionError(what + " (it refused a result)");
  return absl::FailedPreconditionError(what);
}

}  // namespace upp::gateway
