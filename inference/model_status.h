// model/'s Status as an absl::Status: the one conversion, for the server and
// for programs that drive model::WindowRunner directly (model_runner.h).
// model/ has its own Status because pip LibTorch builds lack Abseil; its
// codes are absl::StatusCode's, so the conversion keeps code and message.
#ifndef UPP_INFERENCE_MODEL_STATUS_H_
#define UPP_INFERENCE_MODEL_STATUS_H_

#include "absl/status/status.h"
#include "model/status.h"

namespace upp::inference {

inline absl::Status FromModelStatus(const model::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.code()), status.message());
}

}  // namespace upp::inference

#endif  // UPP_INFERENCE_MODEL_STATUS_H_
