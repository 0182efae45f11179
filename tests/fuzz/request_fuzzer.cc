// libFuzzer target: sequences of SegmentRequest messages through the server's
// request logic without gRPC: the order rules (ClassifyMessage), the header
// checks (ValidateHeader), the upload limits (InputCollector), and on
// EndOfInput the assembly of the inputs into one volume (AssembleInputs), at
// the production limits with the server's admission modelled
// (fuzz_admission.h). Run by deploy/fuzz.sh.
//
// Input: records of [kind byte][2-byte little-endian length][payload]. Kind
// % 4: 0 a header (payload parsed as a RequestHeader), 1 a chunk (first
// payload byte % 4 = input index, the rest data), 2 end of input, 3 a whole
// SegmentRequest parsed from the payload (any field combination).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>

#include "imageio/input_assembly.h"
#include "server/request_validation.h"
#include "tests/fuzz/fuzz_admission.h"

namespace {

using upp::server::MessageKind;

std::optional<unetrpp::v1::SegmentRequest> NextMessage(const uint8_t*& data, size_t& size) {
  if (size < 3) return std::nullopt;
  const uint8_t kind = data[0] % 4;
  const size_t length = std::min<size_t>(data[1] | (data[2] << 8), size - 3);
  const uint8_t* payload = data + 3;
  data += 3 + length;
  size -= 3 + length;
  unetrpp::v1::SegmentRequest m;
  if (kind == 0) {
    m.mutable_header()->ParseFromArray(payload, static_cast<int>(length));
  } else if (kind == 1) {
    m.mutable_chunk()->set_input_index(length > 0 ? payload[0] % 4 : 0);
    if (length > 1) m.mutable_chunk()->set_data(payload + 1, length - 1);
  } else if (kind == 2) {
    m.mutable_end();
  } else {
    m.ParseFromArray(payload, static_cast<int>(length));
  }
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  upp::server::RequestLimits limits;  // production defaults, 64 MiB upload
  limits.max_input_bytes = 64 << 20;
  const upp::server::ModelFacts model{2, 0.25};  // a two-channel model: both NIfTI paths
  std::optional<unetrpp::v1::RequestHeader> header;
  std::optional<upp::server::InputCollector> collector;
  while (auto m = NextMessage(data, size)) {
    auto kind = upp::server::ClassifyMessage(*m, header.has_value(), collector && !collector->inputs().empty());
    if (!kind.ok()) return 0;  // the call ends with this status
    if (*kind == MessageKind::kHeader) {
      unetrpp::v1::RequestHeader h = m->header();
      if (!upp::server::ValidateHeader(h, model, limits).ok()) return 0;
      if (h.outputs().empty()) std::abort();  // the default output is filled in
      header = h;
      collector.emplace(limits, h.format(), model.input_channels);
    } else if (*kind == MessageKind::kChunk) {
      if (!collector->Add(*m->mutable_chunk()).ok()) return 0;
      if (collector->bytes() > static_cast<int64_t>(limits.max_input_bytes)) std::abort();
    } else {
      upp::imageio::AssemblyOptions options;
      options.format = header->format() == unetrpp::v1::INPUT_FORMAT_DICOM ? upp::imageio::InputFormat::kDicom
                                                                           : upp::imageio::InputFormat::kNifti;
      options.channels = model.input_channels;
      options.modalities.clear();  // any modality: reach the pixel decoding
      options.admit = [](const upp::imageio::Geometry&, int64_t bytes) { return upp::fuzz::Admit(bytes); };
      auto input = upp::imageio::AssembleInputs(collector->inputs(), options);
      if (input.ok()) {
        const auto& v = input->volume;
        if (!v.geometry.Validate().ok()) std::abort();
        if (static_cast<int64_t>(v.voxels.size()) != v.channels * v.geometry.NumVoxels()) std::abort();
      } else if (input.status().message().empty()) {
        std::abort();  // every refusal says why
      }
      return 0;
    }
  }
  return 0;
}
