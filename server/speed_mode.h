// What a request's speed mode and label subset (RequestHeader.mode, .labels)
// make of its work, decided once from the header and the model's
// configuration (ModelEntry.speed) before anything runs: which model runs,
// at which step and mirroring, whether a locating pass comes first, and
// which labels the response keeps. Plain functions, no gRPC and no registry
// (tests/server/speed_mode_test.cc); docs/server.md, "Speed modes" and
// "Label subsets".
#ifndef UPP_SERVER_SPEED_MODE_H_
#define UPP_SERVER_SPEED_MODE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/job.h"
#include "inference/label_subset.h"
#include "preprocessing/plan.h"
#include "unetrpp/v1/config.pb.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

// `fast`'s step when the model's configuration names none: at 0.75 a CT
// runs about a third of the windows of the plan's 0.5, for a mean Dice
// within 0.001 of full on the phantoms (docs/model.md, "Speed modes").
inline constexpr double kDefaultFastStep = 0.75;

struct SpeedPlan {
  unetrpp::v1::SpeedMode mode = unetrpp::v1::SPEED_MODE_FULL;
  // `fastest`: run this model (ModelEntry.speed.fastest_model) instead.
  std::string run_model;
  // A label subset with a fastest model: it locates the labels first.
  std::string locator_model;
  std::vector<int> label_values;  // empty: all labels
  double margin_mm = inference::kDefaultSubsetMarginMm;
};

// INVALID_ARGUMENT naming the field: a default mode that is not a mode, a
// fast step outside (0, 1], a fastest model that is this one or missing
// from `served` (the configured model names), a negative margin.
absl::Status ValidateSpeedModes(const unetrpp::v1::ModelEntry& entry, const std::vector<std::string>& served);

// The request's plan: its mode (or the model's default) and its labels
// checked against the model's label table. INVALID_ARGUMENT naming them
// for an unknown, empty or background label, or a mode the model cannot
// serve (`fastest` without a fastest model).
absl::StatusOr<SpeedPlan> PlanSpeed(const unetrpp::v1::RequestHeader& header, const unetrpp::v1::ModelEntry& entry,
                                    const preprocessing::Plan& plan);

// FAILED_PRECONDITION unless `other` (a fastest model) has `plan`'s label
// values and names: its labels stand in for the model's. Checked per
// request, as either model's version may change while the server runs.
absl::Status CheckSameLabels(const std::string& model, const preprocessing::Plan& plan, const std::string& other,
                             const preprocessing::Plan& other_plan);

// The job's step and mirroring: the header's where it names them, else the
// mode's (`fast`, and `fastest` on its coarse model: the model's fast step,
// no mirroring, the body's box tiled), else the plan's.
inference::JobOptions JobOptionsFor(const unetrpp::v1::RequestHeader& header, const SpeedPlan& speed,
                                    const unetrpp::v1::ModelEntry& entry);

// The label table of a response that keeps only `values` (and background);
// all of `table` when `values` is empty.
std::vector<imageio::LabelInfo> KeptLabelTable(const std::vector<imageio::LabelInfo>& table,
                                               const std::vector<int>& values);

}  // namespace upp::server

#endif  // UPP_SERVER_SPEED_MODE_H_
