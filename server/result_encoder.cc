#include "server/result_encoder.h"

#include "imageio/dicom_seg.h"

namespace upp::server {
namespace {

void FillGeometry(const imageio::Geometry& g, unetrpp::v1::Geometry* out) {
  for (int i = 0; i < 3; ++i) {
    out->add_size(g.size[i]);
    out->add_spacing(g.spacing[i]);
    out->add_origin(g.origin[i]);
  }
  for (double d : g.direction) out->add_direction(d);
}

absl::StatusOr<std::string> EncodeSeg(const inference::LabelMap& labels, const EncodingContext& context) {
  if (!context.input || !context.input->dicom)
    return absl::InvalidArgumentError("a DICOM SEG output needs a DICOM input");
  std::vector<imageio::LabelInfo> segments;
  for (const auto& l : context.labels)
    if (l.value > 0) segments.push_back(l);
  return imageio::WriteDicomSeg(labels.geometry, labels.labels, *context.input->dicom,
                                context.input->dicom_source_instance, segments, context.algorithm);
}

}  // namespace

absl::StatusOr<EncodedOutputs> EncodeOutputs(const inference::LabelMap& labels,
                                             const google::protobuf::RepeatedField<int>& kinds,
                                             const EncodingContext& context) {
  EncodedOutputs outputs;
  for (int o : kinds) {
    const auto kind = static_cast<unetrpp::v1::OutputKind>(o);
    absl::StatusOr<std::string> bytes;
    if (kind == unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS) {
      bytes = imageio::WriteNiftiLabels(labels.geometry, labels.labels,
                                        context.input ? context.input->nifti_header : imageio::NiftiHeaderInfo{});
    } else if (kind == unetrpp::v1::OUTPUT_KIND_DICOM_SEG) {
      bytes = EncodeSeg(labels, context);
    } else {
      bytes = imageio::EncodeRawLabels(labels.labels);
    }
    if (!bytes.ok()) return bytes.status();
    outputs.emplace_back(kind, std::move(*bytes));
  }
  return outputs;
}

unetrpp::v1::SegmentResponse ResultHeader(const inference::LabelMap& labels,
                                          const std::vector<imageio::LabelInfo>& table, const EncodedOutputs& outputs) {
  unetrpp::v1::SegmentResponse response;
  auto* rh = response.mutable_result_header();
  FillGeometry(labels.geometry, rh->mutable_geometry());
  rh->set_dtype("uint16");
  FillLabels(table, rh->mutable_labels());
  for (const auto& s : labels.stats) {
    auto* v = rh->add_volumes();
    v->set_value(s.value);
    v->set_voxels(s.voxels);
    v->set_volume_ml(s.volume_ml);
  }
  for (const auto& [kind, bytes] : outputs) {
    rh->add_outputs(kind);
    rh->add_output_bytes(bytes.size());
  }
  return response;
}

absl::StatusOr<EncodedResult> EncodeResult(inference::LabelMap& labels,
                                           const google::protobuf::RepeatedField<int>& kinds,
                                           const EncodingContext& context) {
  auto outputs = EncodeOutputs(labels, kinds, context);
  if (!outputs.ok()) return outputs.status();
  EncodedResult result;
  result.header = ResultHeader(labels, context.labels, *outputs);
  if (context.input) FillInputSummary(*context.input, result.header.mutable_result_header()->mutable_input());
  for (const auto& [kind, bytes] : *outputs) result.bytes += static_cast<int64_t>(bytes.size());
  result.outputs = *std::move(outputs);
  std::vector<uint16_t>().swap(labels.labels);
  return result;
}

void FillInputSummary(const imageio::InputDescription& input, unetrpp::v1::InputSummary* out) {
  if (!input.dicom) {
    out->set_instances_used(static_cast<uint32_t>(input.files));
    return;
  }
  const imageio::DicomSeriesInfo* dicom = &*input.dicom;
  out->set_series_instance_uid(dicom->series_instance_uid);
  out->set_instances_used(static_cast<uint32_t>(dicom->instances_used));
  for (const auto& [reason, count] : dicom->skipped) {
    auto* s = out->add_skipped();
    s->set_reason(reason);
    s->set_count(static_cast<uint32_t>(count));
  }
}

void FillLabels(const std::vector<imageio::LabelInfo>& table,
                google::protobuf::RepeatedPtrField<unetrpp::v1::Label>* out) {
  for (const auto& l : table) {
    auto* label = out->Add();
    label->set_value(l.value);
    label->set_name(l.name);
    label->set_rgb(std::string(l.rgb.begin(), l.rgb.end()));
  }
}

}  // namespace upp::server
