#include "gateway/stow_client.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "gateway/dicomweb_curl.h"
#include "imageio/checked_math.h"

namespace upp::gateway {
namespace {

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

}  // namespace

absl::Status SendFilesStowRs(const unetrpp::v1::DicomWebDestination& d, const std::vector<std::string>& files) {
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

  auto call = DicomWebCall::Create(
      d, "destination.dicomweb", "/studies",
      {absl::StrCat("Content-Type: multipart/related; type=\"application/dicom\"; boundary=", boundary),
       "Accept: application/dicom+json", "Expect:" /* no 100-continue round trip */});
  if (!call.ok()) return call.status();
  CURL* c = (*call)->handle();
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, ReadBody);
  curl_easy_setopt(c, CURLOPT_READDATA, &body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(length));
  int64_t response_bytes = 0;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, DiscardResponse);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response_bytes);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(d.timeout_seconds() * 1000));
  long code = 0;
  const CURLcode rc = (*call)->Perform(code);
  if (body.failed) return absl::InternalError("a result to send cannot be read back");
  if (rc != CURLE_OK) return absl::UnavailableError(absl::StrCat("DICOMweb destination: ", curl_easy_strerror(rc)));
  if (code == 200) return absl::OkStatus();
  const std::string what = absl::StrCat("DICOMweb destination answered HTTP ", code);
  if (code >= 500 || code == 408 || code == 429 || code == 401) return absl::UnavailableError(what);
  if (code == 202 || code == 409) return absl::FailedPreconditionError(what + " (it refused a result)");
  return absl::FailedPreconditionError(what);
}

}  // namespace upp::gateway
