// The body of a STOW-RS request (PS3.18 10.5: multipart/related, RFC 2046
// 5.1 and RFC 2387), read as it arrives: each part's bytes are handed to a
// sink in the pieces they come in, never collected, so a part may be of any
// size the sink allows. The HTTP library (cpp-httplib) parses the request
// and its chunked coding; this is the multipart layer above it.
//
// Every input is hostile: the preamble, a part's headers and the padding
// after a delimiter are bounded; a body that ends before the closing
// delimiter is an error (Finish), as is a header line without a colon.
//
// Threading: one reader per request, used by one thread at a time.
#ifndef UPP_GATEWAY_MULTIPART_H_
#define UPP_GATEWAY_MULTIPART_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace upp::gateway {

// What a request's Content-Type says about its body.
struct MultipartType {
  std::string boundary;
  std::string type;  // the "type" parameter, lower case ("" when absent)
};

// Parses `multipart/related; type="application/dicom"; boundary=...`.
// FAILED_PRECONDITION when the media type is not multipart/related or its
// type parameter is not application/dicom (the caller answers 415);
// INVALID_ARGUMENT when it is malformed or has no valid boundary (400).
absl::StatusOr<MultipartType> ParseMultipartRelated(absl::string_view content_type);

// A media type's type/subtype, lower case, without parameters or spaces.
std::string MediaType(absl::string_view content_type);

class MultipartReader {
 public:
  // Receives the parts in order. A non-OK status from any call stops the
  // reader: Feed returns it.
  class Sink {
   public:
    virtual ~Sink() = default;
    // A part begins; its Content-Type ("" when the part has none).
    virtual absl::Status BeginPart(absl::string_view content_type) = 0;
    virtual absl::Status PartData(absl::string_view data) = 0;
    virtual absl::Status EndPart() = 0;
  };

  static constexpr size_t kMaxPreambleBytes = 64 * 1024;
  static constexpr size_t kMaxPartHeaderBytes = 16 * 1024;
  static constexpr size_t kMaxPaddingBytes = 256;  // transport padding after a delimiter

  // `sink` must outlive the reader.
  MultipartReader(absl::string_view boundary, Sink* sink);

  // The next bytes of the body. INVALID_ARGUMENT for a malformed body, or
  // what the sink returned; after an error every call returns it.
  absl::Status Feed(absl::string_view data);
  // The body has ended: INVALID_ARGUMENT unless the closing delimiter came.
  absl::Status Finish();
  // Parts begun so far.
  int parts() const { return parts_; }

 private:
  enum class State { kPreamble, kAfterDelimiter, kHeaders, kBody, kEpilogue, kFailed };
  absl::Status Step(bool& progressed);
  absl::Status Fail(absl::Status status);
  absl::Status ParseHeaders(absl::string_view block, std::string& content_type) const;

  const std::string delimiter_;  // "\r\n--" + boundary
  Sink* const sink_;
  State state_ = State::kPreamble;
  std::string buffer_;  // bytes not yet handed on: at most a piece plus a delimiter or a header block
  size_t preamble_bytes_ = 0;
  int parts_ = 0;
  absl::Status error_;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_MULTIPART_H_
