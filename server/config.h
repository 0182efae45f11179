// The server's configuration: unetrpp.v1.ServerConfig (proto/unetrpp/v1/
// config.proto) read from protobuf text format, defaults filled in,
// validated with messages that name the field.
#ifndef UPP_SERVER_CONFIG_H_
#define UPP_SERVER_CONFIG_H_

#include <optional>
#include <string>
#include <vector>

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

// Moves the deprecated fields to their new places (timeouts.
// priority_aging_seconds to batching; auth.max_*_per_principal and
// limits.max_requests_per_peer to limits.per_caller), clearing the old ones;
// where both are set the new field wins. One warning per old field found.
// The rest of the server reads only the new places.
std::vector<std::string> MigrateDeprecatedFields(unetrpp::v1::ServerConfig& config);

// Fills every unset field with its default (in place), after
// MigrateDeprecatedFields (whose warnings it logs). The one place each
// default is written: deploy/server.textproto and docs/server.md are tested
// against it (tests/server/config_defaults_test.cc).
void ApplyDefaults(unetrpp::v1::ServerConfig& config);

// Semantic checks after ApplyDefaults: "models[1].devices[0]: ..." style
// messages. Does not touch files (model loading reports missing weights).
absl::Status ValidateConfig(const unetrpp::v1::ServerConfig& config);

// Whether `address` (listen_address's form) is reachable from this machine
// only: 127.x, localhost, [::1] or a unix socket.
bool IsLoopback(const std::string& address);

// Whether `auth` names a way to authenticate a caller (API keys, JWTs or
// client certificates).
bool HasCredentialSource(const unetrpp::v1::Auth& auth);

// The N of a device name "cuda" (0) or "cuda:N"; nullopt for "cpu" and for
// anything that is not a device name.
std::optional<int> CudaIndex(const std::string& device);

}  // namespace upp::server

#endif  // UPP_SERVER_CONFIG_H_
