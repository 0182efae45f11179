// Configuration files in protobuf text format, as the server and the DICOM
// gateway read them: the one place that parses them and words their errors.
// Thread-safe (no shared state).
#ifndef UPP_PROTO_TEXT_CONFIG_H_
#define UPP_PROTO_TEXT_CONFIG_H_

#include <google/protobuf/message.h>

#include <string>

#include "absl/status/status.h"

namespace upp::proto {

// Parses `text` into `message`. INVALID_ARGUMENT "config: line L:C: ..." for
// syntax errors and unknown fields.
absl::Status ParseTextConfig(const std::string& text, google::protobuf::Message& message);
// The same from a file (at most 16 MiB): NOT_FOUND when it cannot be read,
// INVALID_ARGUMENT "<path>: config: line ..." when it does not parse.
absl::Status LoadTextConfigFile(const std::string& path, google::protobuf::Message& message);

}  // namespace upp::proto

#endif  // UPP_PROTO_TEXT_CONFIG_H_
