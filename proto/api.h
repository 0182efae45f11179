// What the server and its clients share about the API beyond the .proto:
// the message size limit, the chunk size, the words for the stages, and the
// mapping between absl and gRPC statuses (the same canonical codes).
// Thread-safe (constants and pure functions).
#ifndef UPP_PROTO_API_H_
#define UPP_PROTO_API_H_

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::proto {

// No message of the API exceeds this (both sides set it on their channels).
inline constexpr int kMaxMessageBytes = 4 << 20;
// Input and result chunks: well under the message limit.
inline constexpr size_t kChunkBytes = 1 << 20;

// "receive", "decode", "preprocess", "queue_wait"..., as metrics, logs and
// upp-client print them.
const char* StageName(unetrpp::v1::Stage stage);

// A speed mode's name in configurations, flags and logs ("full", "fast",
// "fastest"), and back; nullopt for anything else.
const char* SpeedModeName(unetrpp::v1::SpeedMode mode);
std::optional<unetrpp::v1::SpeedMode> SpeedModeFromName(const std::string& name);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Refusals that a later attempt may get past (the server's load, a caller's
// quota in use) carry a retry hint; refusals of the request itself (over a
// per-request limit) carry none, so that clients do not send it again. On the
// wire the hint is the trailing metadata kRetryAfterKey (milliseconds, as
// text); in an absl::Status it is a payload that these functions set and read.
inline constexpr char kRetryAfterKey[] = "retry-after-ms";
absl::Status WithRetryAfter(absl::Status status, absl::Duration after);
std::optional<absl::Duration> RetryAfter(const absl::Status& status);
// Server side: `after` as the trailing metadata of a call not yet finished.
void AddRetryAfterTrailer(grpc::ServerContextBase& context, absl::Duration after);
// Client side: a finished call's status, with the server's retry hint from
// `context`'s trailing metadata as its payload.
absl::Status FromGrpcCall(const grpc::Status& status, const grpc::ClientContext& context);

}  // namespace upp::proto

#endif  // UPP_PROTO_API_H_
