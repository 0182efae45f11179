// model/ statuses into absl ones (absl into gRPC: proto/api.h).
#ifndef UPP_SERVER_STATUS_H_
#define UPP_SERVER_STATUS_H_

#include "absl/status/status.h"
#include "model/status.h"

namespace upp::server {

// model/ has its own Status (pip LibTorch builds lack Abseil); same codes.
absl::Status FromModelStatus(const model::Status& status);

}  // namespace upp::server

#endif  // UPP_SERVER_STATUS_H_
