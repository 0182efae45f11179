#include "proto/api.h"

#include <string>

namespace upp::proto {

const char* StageName(unetrpp::v1::Stage stage) {
  switch (stage) {
    case unetrpp::v1::STAGE_RECEIVING: return "receive";
    case unetrpp::v1::STAGE_DECODING: return "decode";
    case unetrpp::v1::STAGE_PREPROCESSING: return "preprocess";
    case unetrpp::v1::STAGE_INFERENCE: return "inference";
    case unetrpp::v1::STAGE_POSTPROCESSING: return "postprocess";
    case unetrpp::v1::STAGE_ENCODING: return "encode";
    case unetrpp::v1::STAGE_SENDING: return "send";
    default: return "other";
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace upp::proto
