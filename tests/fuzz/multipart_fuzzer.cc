// The STOW-RS receiver's multipart layer (gateway/multipart.h) on hostile
// input: the first line is a Content-Type header value, the second byte
// after it a piece size; the rest is the body, fed in pieces of that size.
// Checks what the receiver relies on: parts begin and end in order, no part
// data is invented or lost (the bytes handed on never exceed the body), and
// after an error nothing more is handed on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gateway/multipart.h"

namespace {

class CheckingSink : public upp::gateway::MultipartReader::Sink {
 public:
  absl::Status BeginPart(absl::string_view content_type) override {
    if (in_part_ || content_type.size() > 16 * 1024) std::abort();
    in_part_ = true;
    return absl::OkStatus();
  }
  absl::Status PartData(absl::string_view data) override {
    if (!in_part_ || data.empty()) std::abort();
    bytes_ += data.size();
    // A sink may refuse (as the receiver does on a full disk).
    if (refuse_after_ && bytes_ > refuse_after_) return absl::ResourceExhaustedError("refused");
    return absl::OkStatus();
  }
  absl::Status EndPart() override {
    if (!in_part_) std::abort();
    in_part_ = false;
    return absl::OkStatus();
  }
  size_t bytes_ = 0;
  size_t refuse_after_ = 0;
  bool in_part_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  if (newline == std::string::npos || newline + 2 > input.size()) return 0;
  auto type = upp::gateway::ParseMultipartRelated(absl::string_view(input).substr(0, newline));
  (void)upp::gateway::MediaType(absl::string_view(input).substr(0, newline));
  if (!type.ok()) return 0;
  const unsigned char control = static_cast<unsigned char>(input[newline + 1]);
  const size_t piece = 1 + (control & 0x3f);
  const absl::string_view body = absl::string_view(input).substr(newline + 2);
  CheckingSink sink;
  if (control & 0x40) sink.refuse_after_ = body.size() / 2 + 1;
  upp::gateway::MultipartReader reader(type->boundary, &sink);
  bool failed = false;
  for (size_t i = 0; i < body.size() && !failed; i += piece) failed = !reader.Feed(body.substr(i, piece)).ok();
  if (failed) {  // stopped: nothing more is handed on
    const size_t before = sink.bytes_;
    if (reader.Feed(body).ok() || sink.bytes_ != before) std::abort();
  }
  const bool finished = reader.Finish().ok();
  if (finished && (failed || sink.in_part_)) std::abort();  // a clean end closes every part
  if (sink.bytes_ > body.size()) std::abort();
  return 0;
}
