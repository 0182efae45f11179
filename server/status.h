// The one place where project statuses become gRPC statuses.
#ifndef UPP_SERVER_STATUS_H_
#define UPP_SERVER_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "model/status.h"

namespace upp::server {

// Same code (absl and gRPC share the canonical codes), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);
// model/ has its own Status (pip LibTorch builds lack Abseil); same codes.
absl::Status FromModelStatus(const model::Status& status);

}  // namespace upp::server

#endif  // UPP_SERVER_STATUS_H_
