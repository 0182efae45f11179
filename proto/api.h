// What the server and its clients share about the API beyond the .proto:
// the message size limit, the chunk size, the words for the stages, and the
// mapping between absl and gRPC statuses (the same canonical codes).
// Thread-safe (constants and pure functions).
#ifndef UPP_PROTO_API_H_
#define UPP_PROTO_API_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::proto {

// No message of the API exceeds this (both sides set it on their channels).
inline constexpr int kMaxMessageBytes = 4 << 20;
// Input and result chunks: well under the message limit.
inline constexpr size_t kChunkBytes = 1 << 20;

// "receive", "decode", "preprocess", "queue_wait"..., as metrics, logs and
// upp-client print them.
const char* StageName(unetrpp::v1::Stage stage);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace upp::proto

#endif  // UPP_PROTO_API_H_
