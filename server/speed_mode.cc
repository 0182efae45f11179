#include "server/speed_mode.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "imageio/labels.h"
#include "proto/api.h"
#include "server/job_request.h"

namespace upp::server {
namespace {

using unetrpp::v1::SpeedMode;

absl::Status Bad(const std::string& model, const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("models[\"", model, "\"].speed.", field, ": ", why));
}

std::string LabelNames(const std::vector<imageio::LabelInfo>& table) {
  std::vector<std::string> names;
  for (const auto& l : table)
    if (l.value > 0) names.push_back(l.name);
  return absl::StrJoin(names, ", ");
}

// The label values named by `names`, or INVALID_ARGUMENT naming every name
// that is not a label of `plan` (background is not one to ask for).
absl::StatusOr<std::vector<int>> LabelValues(const google::protobuf::RepeatedPtrField<std::string>& names,
                                             const std::string& model, const preprocessing::Plan& plan) {
  std::set<int> values;
  std::vector<std::string> unknown;
  for (const std::string& name : names) {
    if (const auto value = imageio::FindLabelValue(plan.labels, name)) {
      values.insert(*value);
    } else {
      unknown.push_back(absl::StrCat("\"", name.substr(0, 64), "\""));
    }
  }
  if (!unknown.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "labels: ", absl::StrJoin(unknown, ", "), unknown.size() == 1 ? " is not a label" : " are not labels",
        " of model \"", model, "\" (its labels: ", LabelNames(plan.labels), ")"));
  return std::vector<int>(values.begin(), values.end());
}

}  // namespace

absl::Status ValidateSpeedModes(const unetrpp::v1::ModelEntry& entry, const std::vector<std::string>& served) {
  const auto& s = entry.speed();
  if (!s.default_mode().empty() && !proto::SpeedModeFromName(s.default_mode()))
    return Bad(entry.name(), "default_mode", absl::StrCat("\"", s.default_mode(), "\" is not full, fast or fastest"));
  if (s.fast_step() < 0 || s.fast_step() > 1)
    return Bad(entry.name(), "fast_step", absl::StrCat("must be in (0, 1], got ", s.fast_step()));
  if (s.subset_margin_mm() < 0)
    return Bad(entry.name(), "subset_margin_mm", absl::StrCat("must not be negative, got ", s.subset_margin_mm()));
  if (s.fastest_model() == entry.name()) return Bad(entry.name(), "fastest_model", "names the model itself");
  if (!s.fastest_model().empty() && std::find(served.begin(), served.end(), s.fastest_model()) == served.end())
    return Bad(entry.name(), "fastest_model", absl::StrCat("no model named \"", s.fastest_model(), "\" is configured"));
  if (s.default_mode() == "fastest" && s.fastest_model().empty())
    return Bad(entry.name(), "default_mode", "\"fastest\" needs a fastest_model");
  return absl::OkStatus();
}

absl::StatusOr<SpeedPlan> PlanSpeed(const unetrpp::v1::RequestHeader& header, const unetrpp::v1::ModelEntry& entry,
                                    const preprocessing::Plan& plan) {
  SpeedPlan speed;
  speed.mode = header.mode() != unetrpp::v1::SPEED_MODE_UNSPECIFIED
                   ? header.mode()
                   : proto::SpeedModeFromName(entry.speed().default_mode()).value_or(unetrpp::v1::SPEED_MODE_FULL);
  if (!unetrpp::v1::SpeedMode_IsValid(speed.mode))
    return absl::InvalidArgumentError(absl::StrCat("mode: ", static_cast<int>(speed.mode), " is not a speed mode"));
  const std::string& fastest = entry.speed().fastest_model();
  if (speed.mode == unetrpp::v1::SPEED_MODE_FASTEST) {
    if (fastest.empty())
      return absl::InvalidArgumentError(absl::StrCat("mode: model \"", entry.name(),
                                                     "\" cannot serve mode fastest (no fastest model is configured "
                                                     "for it: models.speed.fastest_model)"));
    speed.run_model = fastest;
  }
  auto values = LabelValues(header.labels(), entry.name(), plan);
  if (!values.ok()) return values.status();
  speed.label_values = *std::move(values);
  if (!speed.label_values.empty() && speed.mode != unetrpp::v1::SPEED_MODE_FASTEST) speed.locator_model = fastest;
  if (entry.speed().subset_margin_mm() > 0) speed.margin_mm = entry.speed().subset_margin_mm();
  return speed;
}

absl::Status CheckSameLabels(const std::string& model, const preprocessing::Plan& plan, const std::string& other,
                             const preprocessing::Plan& other_plan) {
  const auto same = [](const imageio::LabelInfo& a, const imageio::LabelInfo& b) {
    return a.value == b.value && a.name == b.name;
  };
  if (std::equal(plan.labels.begin(), plan.labels.end(), other_plan.labels.begin(), other_plan.labels.end(), same))
    return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("model \"", model, "\": its fastest model \"", other,
                                                    "\" has other labels (", LabelNames(other_plan.labels),
                                                    "); the server's configuration needs fixing"));
}

inference::JobOptions JobOptionsFor(const unetrpp::v1::RequestHeader& header, const SpeedPlan& speed,
                                    const unetrpp::v1::ModelEntry& entry) {
  inference::JobOptions options = JobOptionsFromHeader(header);
  // `fastest` runs its coarse model with `fast`'s options too: on the 20
  // phantoms the same mean Dice (0.9113 against 0.9106) from 224 windows
  // instead of 727 (docs/model.md, "Speed modes").
  if (speed.mode == unetrpp::v1::SPEED_MODE_FAST || speed.mode == unetrpp::v1::SPEED_MODE_FASTEST)
    inference::ApplyFastMode(entry.speed().fast_step() > 0 ? entry.speed().fast_step() : kDefaultFastStep, &options);
  return options;
}

std::vector<imageio::LabelInfo> KeptLabelTable(const std::vector<imageio::LabelInfo>& table,
                                               const std::vector<int>& values) {
  if (values.empty()) return table;
  std::vector<imageio::LabelInfo> kept;
  for (const auto& l : table)
    if (l.value == 0 || std::find(values.begin(), values.end(), l.value) != values.end()) kept.push_back(l);
  return kept;
}

}  // namespace upp::server
