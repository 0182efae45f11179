// The inference plan of a model: everything between a volume and the
// network's windows, and between the network's outputs and a label map, that
// nnU-Net / UNETR++ stores next to the weights (nnU-Net's "plans" file).
//
// Axis order (docs/axes.md): every 3-vector here is in the *network's* tensor
// order (D, H, W), i.e. after `transpose` has been applied to the volume's
// (z, y, x) tensor axes.
//
// Stored as JSON, either in the safetensors metadata under "unetrpp_plan" or
// in a file the server configuration names. Torch-free: the server includes it.
#ifndef UPP_PREPROCESSING_PLAN_H_
#define UPP_PREPROCESSING_PLAN_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "imageio/labels.h"

namespace upp::preprocessing {

// How one input channel's intensities are normalised (nnU-Net v1 schemes).
struct ChannelNormalization {
  enum class Scheme {
    kCT,      // clip to [clip_low, clip_high] (the training foreground's
              // 0.5 / 99.5 percentiles), then (x - mean) / std.
    kZScore,  // per image: (x - mean(x)) / (std(x) + 1e-8); with
              // use_nonzero_mask, statistics and output only inside the
              // non-zero region, 0 outside (MR, BraTS).
    kNone,    // values passed through unchanged.
  };
  Scheme scheme = Scheme::kCT;
  double clip_low = -1000.0, clip_high = 1000.0;  // kCT
  double mean = 0.0, std = 1.0;                   // kCT
  bool use_nonzero_mask = false;                  // kZScore
};

using imageio::LabelInfo;  // the label table entry (imageio/labels.h)

// What the input is cropped to before resampling; windows run over the
// cropped region only, and everything outside it is background (label 0).
enum class CropMode {
  kBody,     // CT: the patient's body box plus half a patch (body_mask.h); needs channel 0 in HU
  kNonzero,  // nnU-Net's: the bounding box of voxels where any channel is non-zero (MR)
  kNone,     // the whole volume
};
const char* CropModeName(CropMode mode);  // "body", "nonzero", "none"
std::optional<CropMode> CropModeFromName(const std::string& name);

struct Plan {
  // Voxel spacing (mm) of the grid the network was trained on, (D, H, W).
  std::array<double, 3> target_spacing{3.0, 0.76, 0.76};
  // nnU-Net's transpose_forward: network axis a is the volume's tensor axis
  // transpose[a] (0 = z, 1 = y, 2 = x). A permutation of {0, 1, 2}.
  std::array<int, 3> transpose{0, 1, 2};
  std::vector<ChannelNormalization> normalization{ChannelNormalization{}};  // one per channel
  // Unset: the default of the plan's modality, ResolvedCrop(). The JSON key
  // "crop"; the older "crop_to_nonzero" (true: kNonzero, false: kNone) is
  // still read with its meaning.
  std::optional<CropMode> crop;
  std::array<int64_t, 3> patch{64, 128, 128};  // window size, (D, H, W)
  double step = 0.5;                           // window step, fraction of the patch, (0, 1]
  // The smallest step a request may ask for (below the plan's own step, the
  // floor is the smaller of the two): the window count grows with 1/step^3,
  // so a step of 1e-4 would ask for 10^12 windows.
  double min_step = 0.25;
  double StepFloor() const { return std::min(min_step, step); }
  double gaussian_sigma_scale = 0.125;  // sigma = patch * scale
  std::vector<int> mirror_axes;         // test-time flips, subset of {0, 1, 2} (D, H, W)
  // Separate in-plane / out-of-plane resampling (nearest neighbour along the
  // coarse axis) when max spacing / min spacing exceeds this (nnU-Net: 3).
  double anisotropy_threshold = 3.0;
  int num_classes = 14;
  std::vector<LabelInfo> labels;  // names and colours; values < num_classes

  int input_channels() const { return static_cast<int>(normalization.size()); }
  // `crop`, else kBody when channel 0 is CT-normalised (air is -1000 HU, not
  // 0, so nnU-Net's non-zero box is the whole CT), else kNonzero.
  CropMode ResolvedCrop() const;

  // Every constraint, one message per problem naming the field and the value
  // ("plan.step: must be in (0, 1], got 1.5"); empty when the plan is valid.
  std::vector<std::string> Problems() const;
  // Problems() as one INVALID_ARGUMENT (all of them, "; "-separated).
  absl::Status Validate() const;
  std::string ToJson() const;
  // Unknown fields, wrong types, missing keys of a normalization entry and
  // invalid values are all reported at once (INVALID_ARGUMENT,
  // "; "-separated), so that one server start shows every mistake.
  static absl::StatusOr<Plan> FromJson(const std::string& json);
  // The plan stored in safetensors metadata ("unetrpp_plan"); NOT_FOUND if absent.
  static absl::StatusOr<Plan> FromMetadata(const std::map<std::string, std::string>& metadata);
};

// Every problem of a plan's JSON text (FromJson's, one message each); empty
// when FromJson accepts it. `read`, when given, receives the plan as read,
// with the defaults in place of the fields that have problems. For tools that
// check a plan before a server start (upp-plan --check).
std::vector<std::string> CheckPlanJson(const std::string& json, Plan* read = nullptr);

// How a plan disagrees with the network it would run with: one message per
// field, naming both values ("plan.patch [64,128,128] but the network's is
// [32,64,64]"); empty when the patch, classes and channels agree.
std::vector<std::string> PlanNetworkMismatches(const Plan& plan, int num_classes, std::array<int64_t, 3> patch,
                                               int input_channels);

// The plan a network runs with: `plan_json` when not empty, else the weights'
// metadata ("unetrpp_plan"), else DefaultCtPlan() for the network's classes,
// patch and channels. INVALID_ARGUMENT when the plan is invalid or its patch,
// classes or channels differ from the network's (every mismatch named, with
// both values). Callers that want to warn about the DefaultCtPlan fallback
// check for an empty `plan_json` and no "unetrpp_plan" in `metadata`.
absl::StatusOr<Plan> PlanForNetwork(const std::string& plan_json, const std::map<std::string, std::string>& metadata,
                                    int num_classes, std::array<int64_t, 3> patch, int input_channels);

// A CT plan in the shape of UNETR++'s Synapse (BTCV) model: 14 classes with
// the BTCV organ names, 3 x 0.76 x 0.76 mm, patch 64 x 128 x 128. The
// intensity statistics are generic soft-tissue CT values, not those of the
// published training set (which were not published): a real checkpoint
// brings its own plan.
Plan DefaultCtPlan(int num_classes = 14, std::array<int64_t, 3> patch = {64, 128, 128}, int input_channels = 1);

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_PLAN_H_
