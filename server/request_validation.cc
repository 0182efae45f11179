#include "server/request_validation.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"

namespace upp::server {
namespace {

constexpr int kMaxPriority = 2;

absl::Status ValidateOutputs(unetrpp::v1::RequestHeader& header) {
  if (header.outputs().empty()) header.add_outputs(unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS);
  std::set<int> kinds;
  for (int o : header.outputs()) {
    if (!kinds.insert(o).second)
      return absl::InvalidArgumentError("RequestHeader.outputs: an output kind is listed twice");
    if (o < unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS || o > unetrpp::v1::OUTPUT_KIND_RAW_LABELS)
      return absl::InvalidArgumentError("RequestHeader.outputs: unknown output kind");
    if (o == unetrpp::v1::OUTPUT_KIND_DICOM_SEG && header.format() != unetrpp::v1::INPUT_FORMAT_DICOM)
      return absl::InvalidArgumentError("a DICOM SEG output needs a DICOM input");
  }
  return absl::OkStatus();
}

absl::Status ValidateWindows(const unetrpp::v1::RequestHeader& header, const ModelFacts& model) {
  std::set<int> axes;
  for (int a : header.mirror_axes()) {
    if (a < 0 || a > 2) return absl::InvalidArgumentError("RequestHeader.mirror_axes: axes are 0, 1, 2");
    if (!axes.insert(a).second) return absl::InvalidArgumentError("RequestHeader.mirror_axes: an axis is listed twice");
  }
  if (header.step() < 0 || header.step() > 1 || std::isnan(header.step()))
    return absl::InvalidArgumentError("RequestHeader.step must be in (0, 1], or 0 for the plan's");
  if (header.step() > 0 && header.step() < model.step_floor)
    return absl::InvalidArgumentError(absl::StrCat(
        "RequestHeader.step ", header.step(), " is below the model's floor of ", model.step_floor, " (plan min_step)"));
  return absl::OkStatus();
}

// A UID is at most 64 characters of digits and dots (DICOM PS3.5 9.1);
// archives hold UIDs with letters too, which the series they name still
// needs, so any printable character but a space is taken.
absl::Status ValidateSeriesUid(const unetrpp::v1::RequestHeader& header) {
  const std::string& uid = header.series_instance_uid();
  if (uid.empty()) return absl::OkStatus();
  if (header.format() != unetrpp::v1::INPUT_FORMAT_DICOM)
    return absl::InvalidArgumentError("RequestHeader.series_instance_uid is for DICOM input");
  const bool printable = std::all_of(uid.begin(), uid.end(), [](char c) { return c > ' ' && c < 127; });
  if (uid.size() > 64 || !printable)
    return absl::InvalidArgumentError(
        "RequestHeader.series_instance_uid is not a DICOM UID (at most 64 characters, no spaces)");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MessageKind> ClassifyMessage(const unetrpp::v1::SegmentRequest& message, bool header_seen,
                                            bool have_input) {
  switch (message.kind_case()) {
    case unetrpp::v1::SegmentRequest::kHeader:
      if (header_seen) return absl::InvalidArgumentError("a second RequestHeader; send exactly one, first");
      return MessageKind::kHeader;
    case unetrpp::v1::SegmentRequest::kChunk:
      if (!header_seen) return absl::InvalidArgumentError("an InputChunk before the RequestHeader");
      return MessageKind::kChunk;
    case unetrpp::v1::SegmentRequest::kEnd:
      if (!header_seen) return absl::InvalidArgumentError("EndOfInput before the RequestHeader");
      if (!have_input) return absl::InvalidArgumentError("EndOfInput without any input");
      return MessageKind::kEnd;
    default: return absl::InvalidArgumentError("an empty SegmentRequest");
  }
}

RequestLimits RequestLimits::FromConfig(const unetrpp::v1::ServerConfig& config) {
  RequestLimits l;
  l.max_input_bytes = config.limits().max_input_bytes();
  l.max_input_chunks = config.limits().max_input_chunks();
  l.max_input_files = config.limits().max_input_files();
  l.allow_client_priority = config.allow_client_priority();
  return l;
}

absl::Status ValidateHeader(unetrpp::v1::RequestHeader& header, const ModelFacts& model, const RequestLimits& limits) {
  if (header.format() != unetrpp::v1::INPUT_FORMAT_NIFTI && header.format() != unetrpp::v1::INPUT_FORMAT_DICOM)
    return absl::InvalidArgumentError("RequestHeader.format must be NIFTI or DICOM");
  if (auto s = ValidateOutputs(header); !s.ok()) return s;
  if (header.priority() < 0 || header.priority() > kMaxPriority)
    return absl::InvalidArgumentError("RequestHeader.priority must be 0, 1 or 2");
  if (header.priority() > 0 && !limits.allow_client_priority)
    return absl::PermissionDeniedError(
        "RequestHeader.priority above 0 is disabled on this server (allow_client_priority in its configuration)");
  if (auto s = ValidateWindows(header, model); !s.ok()) return s;
  if (auto s = ValidateSeriesUid(header); !s.ok()) return s;
  if (header.expected_input_bytes() > limits.max_input_bytes)
    return absl::ResourceExhaustedError(absl::StrCat("the input (", header.expected_input_bytes(),
                                                     " bytes) exceeds the server's limit of ", limits.max_input_bytes,
                                                     " bytes"));
  return absl::OkStatus();
}

size_t InputCollector::NextCapacity(const std::string& input, size_t more) const {
  const size_t needed = input.size() + more;
  if (needed <= input.capacity()) return input.capacity();
  return std::max(needed, std::min<size_t>(input.capacity() * 2, limits_.max_input_bytes));
}

int64_t InputCollector::BytesToAdd(const unetrpp::v1::InputChunk& chunk) const {
  const auto it = inputs_.find(chunk.input_index());
  if (it == inputs_.end() || it->second.empty()) return static_cast<int64_t>(chunk.data().size());
  return static_cast<int64_t>(NextCapacity(it->second, chunk.data().size()) - it->second.capacity());
}

absl::Status InputCollector::Add(unetrpp::v1::InputChunk& chunk) {
  bytes_ += static_cast<int64_t>(chunk.data().size());
  if (bytes_ > static_cast<int64_t>(limits_.max_input_bytes))
    return absl::ResourceExhaustedError(
        absl::StrCat("the input exceeds the server's limit of ", limits_.max_input_bytes, " bytes"));
  if (++chunks_ > static_cast<int64_t>(limits_.max_input_chunks))
    return absl::ResourceExhaustedError(absl::StrCat("more than ", limits_.max_input_chunks, " input chunks"));
  if (format_ == unetrpp::v1::INPUT_FORMAT_NIFTI && chunk.input_index() >= static_cast<uint32_t>(channels_))
    return absl::InvalidArgumentError(
        absl::StrCat("InputChunk.input_index ", chunk.input_index(), ": the model takes ", channels_, " channel(s)"));
  if (!inputs_.count(chunk.input_index()) && inputs_.size() >= limits_.max_input_files)
    return absl::ResourceExhaustedError(absl::StrCat(
        "more than ", limits_.max_input_files, " input files (InputChunk.input_index values; limits.max_input_files)"));
  std::string& target = inputs_[chunk.input_index()];
  if (target.empty()) {
    target.swap(*chunk.mutable_data());  // the common case: no copy
  } else {
    const size_t capacity = NextCapacity(target, chunk.data().size());
    if (capacity > target.capacity()) {
      // Grown here rather than by append (or reserve, which libstdc++ rounds
      // up to twice the old capacity), so that it is exactly what
      // BytesToAdd said, limit included.
      std::string grown;
      grown.reserve(capacity);
      grown.append(target);
      target.swap(grown);
    }
    target.append(chunk.data());
  }
  return absl::OkStatus();
}

}  // namespace upp::server
