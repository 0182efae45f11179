// A finished request's results in the API's terms: the label map encoded
// into each output the request asked for (NIfTI, DICOM SEG, raw), and the
// ResultHeader (geometry, label table, volumes per label, output sizes).
// Also the one place a label table becomes API labels (ListModels/GetModel
// use it too). Pure functions; called on the CPU pool.
#ifndef UPP_SERVER_RESULT_ENCODER_H_
#define UPP_SERVER_RESULT_ENCODER_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "imageio/dicom.h"
#include "imageio/dicom_seg.h"
#include "imageio/input_assembly.h"
#include "imageio/labels.h"
#include "imageio/nifti.h"
#include "inference/job.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

using EncodedOutputs = std::vector<std::pair<unetrpp::v1::OutputKind, std::string>>;

// What the encoders need of the request's input and the model.
struct EncodingContext {
  const imageio::InputDescription* input = nullptr;  // the input, as decoding described it
  std::vector<imageio::LabelInfo> labels;            // the model's label table
  imageio::SegAlgorithm algorithm;                   // the model and version that made it
};

// One output per kind in `kinds`, in that order.
absl::StatusOr<EncodedOutputs> EncodeOutputs(const inference::LabelMap& labels,
                                             const google::protobuf::RepeatedField<int>& kinds,
                                             const EncodingContext& context);

// A finished request's results: the ResultHeader (the input's summary
// included) and each output asked for, with their total bytes (what a client
// that reads slowly holds of the server).
struct EncodedResult {
  unetrpp::v1::SegmentResponse header;
  EncodedOutputs outputs;
  int64_t bytes = 0;
};

// EncodeOutputs and ResultHeader together; the label voxels are released
// once encoded (the outputs hold them now).
absl::StatusOr<EncodedResult> EncodeResult(inference::LabelMap& labels,
                                           const google::protobuf::RepeatedField<int>& kinds,
                                           const EncodingContext& context);

unetrpp::v1::SegmentResponse ResultHeader(const inference::LabelMap& labels,
                                          const std::vector<imageio::LabelInfo>& table, const EncodedOutputs& outputs);

// Which series was segmented and what was left out, by reason (NIfTI: the
// files, all used).
void FillInputSummary(const imageio::InputDescription& input, unetrpp::v1::InputSummary* out);

void FillLabels(const std::vector<imageio::LabelInfo>& table,
                google::protobuf::RepeatedPtrField<unetrpp::v1::Label>* out);

}  // namespace upp::server

#endif  // UPP_SERVER_RESULT_ENCODER_H_
