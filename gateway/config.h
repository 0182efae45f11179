// The DICOM gateway's configuration: unetrpp.v1.GatewayConfig (proto/
// unetrpp/v1/gateway.proto) read from protobuf text format, defaults filled
// in, validated with messages that name the field.
// Thread-safe (pure functions).
#ifndef UPP_GATEWAY_CONFIG_H_
#define UPP_GATEWAY_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// Parse, ApplyDefaults, Validate: the configuration the gateway runs with.
absl::StatusOr<unetrpp::v1::GatewayConfig> LoadConfig(const std::string& path);

// Fills every unset field with its documented default (in place).
void ApplyDefaults(unetrpp::v1::GatewayConfig& config);

// Semantic checks after ApplyDefaults ("rules[2].orientations[0]: ...").
absl::Status Validate(const unetrpp::v1::GatewayConfig& config);

// Every file the configuration names (TLS certificates, keys and CAs, the
// service's token file) can be read now: FAILED_PRECONDITION naming each
// that cannot. A start refuses (a missing CA is found before the first
// series fails on it); --check-config warns.
absl::Status CheckFilesReadable(const unetrpp::v1::GatewayConfig& config);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_CONFIG_H_
