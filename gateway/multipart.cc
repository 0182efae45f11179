#include "gateway/multipart.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace upp::gateway {
namespace {

constexpr char kCrlf[] = "\r\n";

// RFC 2046 5.1.1: bcharsnospace, and space (not last); 1 to 70 characters
// there, up to kMaxBoundaryBytes here: Orthanc's DICOMweb client (1.7)
// sends two UUIDs joined, 73 characters.
constexpr size_t kMaxBoundaryBytes = 200;

bool ValidBoundary(absl::string_view b) {
  if (b.empty() || b.size() > kMaxBoundaryBytes || b.back() == ' ') return false;
  for (char c : b) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c))) continue;
    if (absl::string_view("'()+_,-./:=? ").find(c) == absl::string_view::npos) return false;
  }
  return true;
}

// RFC 7230 3.2.6 token characters.
bool TokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

void SkipSpace(absl::string_view s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
}

}  // namespace

std::string MediaType(absl::string_view content_type) {
  const size_t semicolon = content_type.find(';');
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type.substr(0, semicolon)));
}

absl::StatusOr<MultipartType> ParseMultipartRelated(absl::string_view content_type) {
  if (MediaType(content_type) != "multipart/related")
    return absl::FailedPreconditionError("the request's media type must be multipart/related");
  MultipartType result;
  bool have_boundary = false;
  size_t i = content_type.find(';');
  // Parameters: ; name=token or ; name="quoted string" (RFC 7231 3.1.1.1).
  while (i != absl::string_view::npos && i < content_type.size()) {
    if (content_type[i] != ';') return absl::InvalidArgumentError("Content-Type: expected ';' between parameters");
    ++i;
    SkipSpace(content_type, i);
    if (i == content_type.size()) break;  // a trailing ';'
    const size_t name_start = i;
    while (i < content_type.size() && TokenChar(content_type[i])) ++i;
    const std::string name = absl::AsciiStrToLower(content_type.substr(name_start, i - name_start));
    if (name.empty() || i == content_type.size() || content_type[i] != '=')
      return absl::InvalidArgumentError("Content-Type: a parameter is not name=value");
    ++i;
    std::string value;
    if (i < content_type.size() && content_type[i] == '"') {
      ++i;
      bool closed = false;
      while (i < content_type.size()) {
        const char c = content_type[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (i == content_type.size()) break;
          value.push_back(content_type[i++]);
        } else {
          value.push_back(c);
        }
      }
      if (!closed) return absl::InvalidArgumentError("Content-Type: an unterminated quoted parameter");
    } else {
      // A token; '/' too, as senders write type=application/dicom unquoted.
      const size_t value_start = i;
      while (i < content_type.size() && (TokenChar(content_type[i]) || content_type[i] == '/')) ++i;
      value = std::string(content_type.substr(value_start, i - value_start));
      if (value.empty()) return absl::InvalidArgumentError("Content-Type: a parameter has no value");
    }
    SkipSpace(content_type, i);
    if (name == "boundary") {
      if (have_boundary) return absl::InvalidArgumentError("Content-Type: two boundary parameters");
      if (!ValidBoundary(value))
        return absl::InvalidArgumentError("Content-Type: the boundary must be 1 to 200 characters of RFC 2046");
      result.boundary = std::move(value);
      have_boundary = true;
    } else if (name == "type") {
      result.type = absl::AsciiStrToLower(value);
    }
    if (i < content_type.size() && content_type[i] != ';')
      return absl::InvalidArgumentError("Content-Type: expected ';' between parameters");
  }
  if (!have_boundary) return absl::InvalidArgumentError("Content-Type: multipart/related needs a boundary parameter");
  if (!result.type.empty() && MediaType(result.type) != "application/dicom")
    return absl::FailedPreconditionError("only type=\"application/dicom\" parts are accepted");
  return result;
}

MultipartReader::MultipartReader(absl::string_view boundary, Sink* sink)
    : delimiter_(absl::StrCat(kCrlf, "--", boundary)), sink_(sink), buffer_(kCrlf) {}

absl::Status MultipartReader::Fail(absl::Status status) {
  state_ = State::kFailed;
  error_ = std::move(status);
  buffer_.clear();
  buffer_.shrink_to_fit();
  return error_;
}

absl::Status MultipartReader::Feed(absl::string_view data) {
  if (state_ == State::kFailed) return error_;
  if (state_ == State::kEpilogue) return absl::OkStatus();  // the epilogue is ignored (RFC 2046)
  buffer_.append(data.data(), data.size());
  bool progressed = true;
  while (progressed) {
    progressed = false;
    if (auto s = Step(progressed); !s.ok()) return Fail(s);
  }
  return absl::OkStatus();
}

absl::Status MultipartReader::Finish() {
  if (state_ == State::kFailed) return error_;
  if (state_ != State::kEpilogue)
    return Fail(absl::InvalidArgumentError("the body ended before the closing multipart boundary"));
  return absl::OkStatus();
}

absl::Status MultipartReader::ParseHeaders(absl::string_view block, std::string& content_type) const {
  content_type.clear();
  bool seen = false;
  for (absl::string_view line : absl::StrSplit(block, kCrlf)) {
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0)
      return absl::InvalidArgumentError("a part's header line is not \"Name: value\"");
    const absl::string_view name = line.substr(0, colon);
    for (char c : name)
      if (!TokenChar(c)) return absl::InvalidArgumentError("a part's header name is not a token");
    if (absl::EqualsIgnoreCase(name, "Content-Type")) {
      if (seen) return absl::InvalidArgumentError("a part has two Content-Type headers");
      seen = true;
      content_type = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return absl::OkStatus();
}

absl::Status MultipartReader::Step(bool& progressed) {
  switch (state_) {
    case State::kPreamble: {
      const size_t at = buffer_.find(delimiter_);
      if (at == std::string::npos) {
        // Keep what may be the start of a delimiter; the rest is preamble.
        const size_t keep = std::min(buffer_.size(), delimiter_.size() - 1);
        preamble_bytes_ += buffer_.size() - keep;
        buffer_.erase(0, buffer_.size() - keep);
        if (preamble_bytes_ > kMaxPreambleBytes)
          return absl::InvalidArgumentError("no multipart boundary where the body begins");
        return absl::OkStatus();
      }
      preamble_bytes_ += at;
      if (preamble_bytes_ > kMaxPreambleBytes)
        return absl::InvalidArgumentError("no multipart boundary where the body begins");
      buffer_.erase(0, at + delimiter_.size());
      state_ = State::kAfterDelimiter;
      progressed = true;
      return absl::OkStatus();
    }
    case State::kAfterDelimiter: {
      if (buffer_.size() >= 2 && buffer_.compare(0, 2, "--") == 0) {
        state_ = State::kEpilogue;
        buffer_.clear();
        buffer_.shrink_to_fit();
        return absl::OkStatus();
      }
      size_t i = 0;
      SkipSpace(buffer_, i);
      if (i > kMaxPaddingBytes) return absl::InvalidArgumentError("too much padding after a multipart boundary");
      if (buffer_.size() < i + 2) {
        // "-" alone may still become "--"; anything else must be padding.
        if (buffer_.size() == i || (buffer_.size() == i + 1 && (buffer_[i] == '\r' || (i == 0 && buffer_[i] == '-'))))
          return absl::OkStatus();
        return absl::InvalidArgumentError("a multipart boundary is not followed by a line break");
      }
      if (buffer_.compare(i, 2, kCrlf) != 0)
        return absl::InvalidArgumentError("a multipart boundary is not followed by a line break");
      buffer_.erase(0, i + 2);
      state_ = State::kHeaders;
      progressed = true;
      return absl::OkStatus();
    }
    case State::kHeaders: {
      // The header block ends at an empty line; a part without headers
      // begins with it.
      size_t end = std::string::npos;
      size_t skip = 0;
      if (buffer_.size() >= 2 && buffer_.compare(0, 2, kCrlf) == 0) {
        end = 0;
        skip = 2;
      } else if (const size_t at = buffer_.find("\r\n\r\n"); at != std::string::npos) {
        end = at;
        skip = 4;
      }
      if (end == std::string::npos || end > kMaxPartHeaderBytes) {
        if (buffer_.size() > kMaxPartHeaderBytes + 4)
          return absl::InvalidArgumentError("a part's headers are longer than 16 KiB");
        return absl::OkStatus();
      }
      std::string content_type;
      if (auto s = ParseHeaders(absl::string_view(buffer_).substr(0, end), content_type); !s.ok()) return s;
      buffer_.erase(0, end + skip);
      ++parts_;
      if (auto s = sink_->BeginPart(content_type); !s.ok()) return s;
      state_ = State::kBody;
      progressed = true;
      return absl::OkStatus();
    }
    case State::kBody: {
      const size_t at = buffer_.find(delimiter_);
      if (at == std::string::npos) {
        const size_t keep = std::min(buffer_.size(), delimiter_.size() - 1);
        if (buffer_.size() > keep) {
          if (auto s = sink_->PartData(absl::string_view(buffer_).substr(0, buffer_.size() - keep)); !s.ok()) return s;
          buffer_.erase(0, buffer_.size() - keep);
        }
        return absl::OkStatus();
      }
      if (at > 0)
        if (auto s = sink_->PartData(absl::string_view(buffer_).substr(0, at)); !s.ok()) return s;
      if (auto s = sink_->EndPart(); !s.ok()) return s;
      buffer_.erase(0, at + delimiter_.size());
      state_ = State::kAfterDelimiter;
      progressed = true;
      return absl::OkStatus();
    }
    case State::kEpilogue:
    case State::kFailed: return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace upp::gateway
