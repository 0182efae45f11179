#include "preprocessing/plan.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace upp::preprocessing {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("plan.", field, ": ", what));
}

const char* SchemeName(ChannelNormalization::Scheme s) {
  switch (s) {
    case ChannelNormalization::Scheme::kCT: return "ct";
    case ChannelNormalization::Scheme::kZScore: return "zscore";
    case ChannelNormalization::Scheme::kNone: return "none";
  }
  return "?";
}

// The BTCV / Synapse label table (names as in the BTCV challenge). Colours:
// conventional hues where anatomy has one (liver brown, arteries red, veins
// blue, spleen Slicer's purple), every pair at least 20 CIELAB units apart
// (tested): 3D Slicer's generic anatomy colours, used before, are salmon
// shades for most abdominal organs (liver and stomach 3.7 apart).
const LabelInfo kBtcvLabels[] = {
    {0, "background", {0, 0, 0}},
    {1, "spleen", {157, 108, 162}},
    {2, "right kidney", {241, 196, 15}},
    {3, "left kidney", {52, 152, 219}},
    {4, "gallbladder", {0, 128, 0}},
    {5, "esophagus", {255, 160, 122}},
    {6, "liver", {196, 98, 50}},
    {7, "stomach", {46, 204, 113}},
    {8, "aorta", {220, 30, 50}},
    {9, "inferior vena cava", {0, 0, 180}},
    {10, "portal and splenic vein", {0, 200, 200}},
    {11, "pancreas", {255, 128, 255}},
    {12, "right adrenal gland", {128, 128, 0}},
    {13, "left adrenal gland", {180, 255, 120}},
};

}  // namespace

absl::Status Plan::Validate() const {
  for (int a = 0; a < 3; ++a) {
    if (!std::isfinite(target_spacing[a]) || target_spacing[a] <= 0 || target_spacing[a] > 1e4)
      return Bad("target_spacing", absl::StrCat("axis ", a, " must be finite and > 0"));
    if (patch[a] < 1 || patch[a] > 4096) return Bad("patch", absl::StrCat("axis ", a, " must be in [1, 4096]"));
  }
  std::array<int, 3> sorted = transpose;
  std::sort(sorted.begin(), sorted.end());
  if (sorted != std::array<int, 3>{0, 1, 2}) return Bad("transpose", "must be a permutation of 0, 1, 2");
  if (normalization.empty() || normalization.size() > 16)
    return Bad("normalization", "needs one entry per input channel (1 to 16)");
  for (size_t c = 0; c < normalization.size(); ++c) {
    const auto& n = normalization[c];
    const std::string f = absl::StrCat("normalization[", c, "]");
    if (n.scheme == ChannelNormalization::Scheme::kCT) {
      if (!std::isfinite(n.clip_low) || !std::isfinite(n.clip_high) || n.clip_low >= n.clip_high)
        return Bad(f, "clip_low must be finite and below clip_high");
      if (!std::isfinite(n.mean) || !std::isfinite(n.std) || n.std <= 0)
        return Bad(f, "mean must be finite and std finite and > 0");
    }
  }
  if (!(step > 0 && step <= 1)) return Bad("step", "must be in (0, 1]");
  if (!(min_step > 0 && min_step <= 1)) return Bad("min_step", "must be in (0, 1]");
  if (!(gaussian_sigma_scale > 0 && gaussian_sigma_scale <= 10))
    return Bad("gaussian_sigma_scale", "must be in (0, 10]");
  std::set<int> axes;
  for (int a : mirror_axes) {
    if (a < 0 || a > 2) return Bad("mirror_axes", "axes are 0 (D), 1 (H), 2 (W)");
    if (!axes.insert(a).second) return Bad("mirror_axes", "an axis is listed twice");
  }
  if (!(anisotropy_threshold >= 1)) return Bad("anisotropy_threshold", "must be >= 1");
  if (num_classes < 2 || num_classes > 65535) return Bad("num_classes", "must be in [2, 65535]");
  std::set<int> values;
  for (const auto& l : labels) {
    if (l.value < 0 || l.value >= num_classes)
      return Bad("labels", absl::StrCat("value ", l.value, " is not a class (0..", num_classes - 1, ")"));
    if (!values.insert(l.value).second) return Bad("labels", absl::StrCat("value ", l.value, " is listed twice"));
  }
  return absl::OkStatus();
}

std::string Plan::ToJson() const {
  json j;
  j["target_spacing"] = target_spacing;
  j["transpose"] = transpose;
  json norm = json::array();
  for (const auto& n : normalization) {
    json c{{"scheme", SchemeName(n.scheme)}};
    if (n.scheme == ChannelNormalization::Scheme::kCT) {
      c["clip_low"] = n.clip_low;
      c["clip_high"] = n.clip_high;
      c["mean"] = n.mean;
      c["std"] = n.std;
    } else if (n.scheme == ChannelNormalization::Scheme::kZScore) {
      c["use_nonzero_mask"] = n.use_nonzero_mask;
    }
    norm.push_back(c);
  }
  j["normalization"] = norm;
  j["crop_to_nonzero"] = crop_to_nonzero;
  j["patch"] = patch;
  j["step"] = step;
  j["min_step"] = min_step;
  j["gaussian_sigma_scale"] = gaussian_sigma_scale;
  j["mirror_axes"] = mirror_axes;
  j["anisotropy_threshold"] = anisotropy_threshold;
  j["num_classes"] = num_classes;
  json labels_json = json::array();
  for (const auto& l : labels) labels_json.push_back({{"value", l.value}, {"name", l.name}, {"rgb", l.rgb}});
  j["labels"] = labels_json;
  return j.dump();
}

absl::StatusOr<Plan> Plan::FromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("json", "not a JSON object");
  static const std::set<std::string> kKnown = {
      "target_spacing",       "transpose",   "normalization",        "crop_to_nonzero", "patch", "step", "min_step",
      "gaussian_sigma_scale", "mirror_axes", "anisotropy_threshold", "num_classes",     "labels"};
  for (const auto& [key, value] : j.items())
    if (!kKnown.count(key)) return Bad(key, "unknown field");
  Plan plan;
  std::string field;  // the field being read, for the message of a type error
  try {
    auto get = [&](const char* name, auto& out) {
      field = name;
      if (j.contains(name)) j.at(name).get_to(out);
    };
    get("target_spacing", plan.target_spacing);
    get("transpose", plan.transpose);
    get("crop_to_nonzero", plan.crop_to_nonzero);
    get("patch", plan.patch);
    get("step", plan.step);
    get("min_step", plan.min_step);
    get("gaussian_sigma_scale", plan.gaussian_sigma_scale);
    get("mirror_axes", plan.mirror_axes);
    get("anisotropy_threshold", plan.anisotropy_threshold);
    get("num_classes", plan.num_classes);
    if (j.contains("normalization")) {
      field = "normalization";
      plan.normalization.clear();
      for (const auto& c : j.at("normalization")) {
        ChannelNormalization n;
        const std::string scheme = c.at("scheme").get<std::string>();
        if (scheme == "ct") {
          n.scheme = ChannelNormalization::Scheme::kCT;
          n.clip_low = c.at("clip_low").get<double>();
          n.clip_high = c.at("clip_high").get<double>();
          n.mean = c.at("mean").get<double>();
          n.std = c.at("std").get<double>();
        } else if (scheme == "zscore") {
          n.scheme = ChannelNormalization::Scheme::kZScore;
          n.use_nonzero_mask = c.value("use_nonzero_mask", false);
        } else if (scheme == "none") {
          n.scheme = ChannelNormalization::Scheme::kNone;
        } else {
          return Bad("normalization", "scheme must be ct, zscore or none");
        }
        plan.normalization.push_back(n);
      }
    }
    if (j.contains("labels")) {
      field = "labels";
      for (const auto& l : j.at("labels")) {
        LabelInfo info;
        info.value = l.at("value").get<int>();
        info.name = l.value("name", "");
        if (l.contains("rgb")) l.at("rgb").get_to(info.rgb);
        plan.labels.push_back(info);
      }
    }
  } catch (const json::exception& e) {
    return Bad(field, absl::StrCat("wrong type or shape (", e.what(), ")"));
  }
  if (auto s = plan.Validate(); !s.ok()) return s;
  return plan;
}

absl::StatusOr<Plan> Plan::FromMetadata(const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find("unetrpp_plan");
  if (it == metadata.end()) return absl::NotFoundError("no \"unetrpp_plan\" in the weights' metadata");
  return FromJson(it->second);
}

absl::StatusOr<Plan> PlanForNetwork(const std::string& plan_json, const std::map<std::string, std::string>& metadata,
                                    int num_classes, std::array<int64_t, 3> patch, int input_channels) {
  absl::StatusOr<Plan> plan = plan_json.empty() ? Plan::FromMetadata(metadata) : Plan::FromJson(plan_json);
  if (plan_json.empty() && plan.status().code() == absl::StatusCode::kNotFound)
    plan = DefaultCtPlan(num_classes, patch, input_channels);
  if (!plan.ok()) return absl::InvalidArgumentError(plan.status().message());
  if (plan->patch != patch || plan->num_classes != num_classes || plan->input_channels() != input_channels)
    return absl::InvalidArgumentError("the plan's patch, num_classes or channels differ from the network's");
  return plan;
}

Plan DefaultCtPlan(int num_classes, std::array<int64_t, 3> patch, int input_channels) {
  Plan plan;
  plan.patch = patch;
  plan.num_classes = num_classes;
  ChannelNormalization ct;
  ct.clip_low = -958.0;  // generic abdominal CT foreground range and statistics
  ct.clip_high = 327.0;
  ct.mean = 82.0;
  ct.std = 136.0;
  plan.normalization.assign(std::max(1, input_channels), ct);
  for (const auto& l : kBtcvLabels)
    if (l.value < num_classes) plan.labels.push_back(l);
  for (int v = static_cast<int>(plan.labels.size()); v < num_classes; ++v)
    plan.labels.push_back(
        {v,
         absl::StrCat("label ", v),
         {static_cast<uint8_t>(37 * v), static_cast<uint8_t>(91 * v), static_cast<uint8_t>(173 * v)}});
  return plan;
}

}  // namespace upp::preprocessing
