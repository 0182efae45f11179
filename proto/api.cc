#include "proto/api.h"

#include <cstdint>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace upp::proto {

const char* SpeedModeName(unetrpp::v1::SpeedMode mode) {
  if (mode == unetrpp::v1::SPEED_MODE_FAST) return "fast";
  return mode == unetrpp::v1::SPEED_MODE_FASTEST ? "fastest" : "full";
}

std::optional<unetrpp::v1::SpeedMode> SpeedModeFromName(const std::string& name) {
  if (name == "full") return unetrpp::v1::SPEED_MODE_FULL;
  if (name == "fast") return unetrpp::v1::SPEED_MODE_FAST;
  if (name == "fastest") return unetrpp::v1::SPEED_MODE_FASTEST;
  return std::nullopt;
}

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

namespace {

constexpr char kRetryAfterUrl[] = "type.unetrpp.v1/retry-after-ms";

// The hint's text, in payloads and trailers alike: whole milliseconds.
std::string MillisecondsText(absl::Duration d) { return absl::StrCat(absl::ToInt64Milliseconds(d)); }
std::optional<absl::Duration> ParseMilliseconds(absl::string_view text) {
  int64_t ms = 0;
  if (!absl::SimpleAtoi(text, &ms) || ms < 0) return std::nullopt;
  return absl::Milliseconds(ms);
}

}  // namespace

absl::Status WithRetryAfter(absl::Status status, absl::Duration after) {
  status.SetPayload(kRetryAfterUrl, absl::Cord(MillisecondsText(after)));
  return status;
}

std::optional<absl::Duration> RetryAfter(const absl::Status& status) {
  const auto payload = status.GetPayload(kRetryAfterUrl);  // absl::optional: not std:: in every Abseil build
  if (!payload) return std::nullopt;
  return ParseMilliseconds(std::string(*payload));
}

void AddRetryAfterTrailer(grpc::ServerContextBase& context, absl::Duration after) {
  context.AddTrailingMetadata(kRetryAfterKey, MillisecondsText(after));
}

absl::Status FromGrpcCall(const grpc::Status& status, const grpc::ClientContext& context) {
  absl::Status out = FromGrpcStatus(status);
  if (out.ok()) return out;
  const auto& trailers = context.GetServerTrailingMetadata();
  const auto hint = trailers.find(kRetryAfterKey);
  if (hint == trailers.end()) return out;
  if (auto after = ParseMilliseconds(absl::string_view(hint->second.data(), hint->second.size())))
    out = WithRetryAfter(std::move(out), *after);
  return out;
}

}  // namespace upp::proto
