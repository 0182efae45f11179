// The checks a Segment call's messages pass before any work, without gRPC:
// the RequestHeader against the model and the server's rules, and the input
// chunks against the upload limits. The reactor (segment_call.h) applies
// them to each message; the request fuzzer (tests/fuzz) feeds them arbitrary
// message sequences. Plain functions and one single-threaded collector per
// call (gRPC serialises a call's reads).
#ifndef UPP_SERVER_REQUEST_VALIDATION_H_
#define UPP_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "unetrpp/v1/config.pb.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

struct RequestLimits {
  uint64_t max_input_bytes = uint64_t{2} << 30;
  uint64_t max_input_chunks = 1000000;
  uint64_t max_input_files = 4096;
  bool allow_client_priority = false;
  static RequestLimits FromConfig(const unetrpp::v1::ServerConfig& config);
};

// What the header checks need of the model the header names.
struct ModelFacts {
  int input_channels = 1;
  double step_floor = 0.25;  // plan.StepFloor()
};

// The protocol's order: exactly one RequestHeader, first; InputChunks; one
// EndOfInput after at least one chunk. Which of these `message` is, or why it
// may not come now.
enum class MessageKind { kHeader, kChunk, kEnd };
absl::StatusOr<MessageKind> ClassifyMessage(const unetrpp::v1::SegmentRequest& message, bool header_seen,
                                            bool have_input);

// Checks `header` (format, outputs: known, unique, SEG only for DICOM;
// priority and whether it is allowed; mirror axes; step against the model's
// floor; the announced size) and fills the default output. The first
// violation, with a message naming the field.
absl::Status ValidateHeader(unetrpp::v1::RequestHeader& header, const ModelFacts& model, const RequestLimits& limits);

// The input chunks of one call: bytes, chunk and file counts against the
// limits, NIfTI indices against the channels, and the bytes per input index.
class InputCollector {
 public:
  InputCollector(const RequestLimits& limits, unetrpp::v1::InputFormat format, int channels)
      : limits_(limits), format_(format), channels_(channels) {}
  // The memory Add(chunk) will allocate: the chunk's bytes for a new input
  // (its buffer is taken over), else the growth of that input's buffer,
  // which grows by doubling (capped by the upload limit) under this class's
  // control, so that a caller can reserve exactly that before it happens.
  int64_t BytesToAdd(const unetrpp::v1::InputChunk& chunk) const;
  // Checks the chunk, then takes its bytes (moved, not copied, for a new index).
  absl::Status Add(unetrpp::v1::InputChunk& chunk);
  int64_t bytes() const { return bytes_; }
  std::map<uint32_t, std::string>& inputs() { return inputs_; }

 private:
  size_t NextCapacity(const std::string& input, size_t more) const;

  const RequestLimits limits_;
  const unetrpp::v1::InputFormat format_;
  const int channels_;
  int64_t bytes_ = 0, chunks_ = 0;
  std::map<uint32_t, std::string> inputs_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_REQUEST_VALIDATION_H_
