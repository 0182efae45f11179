// The server's configuration: unetrpp.v1.ServerConfig (proto/unetrpp/v1/
// config.proto) read from protobuf text format, defaults filled in,
// validated with messages that name the field.
#ifndef UPP_SERVER_CONFIG_H_
#define UPP_SERVER_CONFIG_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// Parses `text` (protobuf text format). INVALID_ARGUMENT with the line,
// column and field for syntax errors and unknown fields.
absl::StatusOr<unetrpp::v1::ServerConfig> ParseConfig(const std::string& text);
// The file at `path`, with every relative file name in it (weights, plans,
// TLS files, key and audit files, JWKS) taken relative to the file's folder,
// so that a configuration works from any working directory.
absl::StatusOr<unetrpp::v1::ServerConfig> LoadConfigFile(const std::string& path);

// Fills every unset field with its documented default (in place).
void ApplyDefaults(unetrpp::v1::ServerConfig& config);

// Semantic checks after ApplyDefaults: "models[1].devices[0]: ..." style
// messages. Does not touch files (model loading reports missing weights).
absl::Status ValidateConfig(const unetrpp::v1::ServerConfig& config);

// The N of a device name "cuda" (0) or "cuda:N"; nullopt for "cpu" and for
// anything that is not a device name.
std::optional<int> CudaIndex(const std::string& device);

}  // namespace upp::server

#endif  // UPP_SERVER_CONFIG_H_
