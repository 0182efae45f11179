#include "preprocessing/plan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace upp::preprocessing {
namespace {

using nlohmann::json;

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

std::string Field(const std::string& field, const std::string& what) {
  return absl::StrCat("plan.", field, ": ", what);
}

absl::Status ProblemsStatus(const std::vector<std::string>& problems) {
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

// A JSON value as the file has it, shortened for a message.
std::string Shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

template <typename T, size_t N>
std::string Shown(const std::array<T, N>& a) {
  return absl::StrCat("[", absl::StrJoin(a, ","), "]");
}

std::optional<double> AsNumber(const json& v) {
  if (!v.is_number()) return std::nullopt;
  return v.get<double>();
}

// An integral float (64.0, as numpy-based writers may emit) counts as an
// integer: refusing it would only make converted plans fail.
std::optional<int64_t> AsInteger(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// The names nnU-Net's plans (and other tools) use for our fields: an unknown
// field that is one of these gets a "did you mean" instead of a bare refusal.
const std::map<std::string, std::string>& TopLevelHints() {
  static const auto* hints = new std::map<std::string, std::string>{
      {"patch_size", "patch"},
      {"crop_size", "patch"},
      {"spacing", "target_spacing"},
      {"current_spacing", "target_spacing"},
      {"transpose_forward", "transpose"},
      {"normalization_schemes", "normalization"},
      {"normalisation", "normalization"},
      {"intensityproperties", "normalization (per channel: clip_low, clip_high, mean, std)"},
      {"use_mask_for_norm", "normalization[c].use_nonzero_mask"},
      {"step_size", "step"},
      {"mirror", "mirror_axes"},
      {"mirroring", "mirror_axes"},
      {"classes", "num_classes"},
      {"label_names", "labels"},
      {"all_classes", "labels"},
  };
  return *hints;
}

const std::map<std::string, std::string>& ChannelHints() {
  static const auto* hints = new std::map<std::string, std::string>{
      {"sd", "std"},
      {"percentile_00_5", "clip_low"},
      {"percentile_99_5", "clip_high"},
      {"use_mask_for_norm", "use_nonzero_mask"},
      {"type", "scheme"},
  };
  return *hints;
}

constexpr const char* kKnownFields[] = {
    "target_spacing", "transpose", "normalization",        "crop",        "crop_to_nonzero",      "patch",
    "step",           "min_step",  "gaussian_sigma_scale", "mirror_axes", "anisotropy_threshold", "num_classes",
    "labels"};

// Reads a parsed plan, collecting one message for every field that is
// unknown, missing or of the wrong type. A field with a problem keeps its
// default (a normalization entry is replaced by a "none" one, so the channel
// count stays right) so that the value checks that follow (Plan::Problems)
// neither repeat it nor stop early.
Plan ReadPlan(const json& j, std::vector<std::string>* problems) {
  Plan plan;
  auto problem = [&](const std::string& field, const std::string& what) { problems->push_back(Field(field, what)); };
  auto number = [&](const json& v, const std::string& field, double* out) {
    if (auto d = AsNumber(v)) {
      *out = *d;
    } else {
      problem(field, "must be a number, got " + Shown(v));
    }
  };
  auto integer = [&](const json& v, const std::string& field, auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    auto i = AsInteger(v);
    if (!i) return problem(field, "must be an integer, got " + Shown(v));
    if (*i < std::numeric_limits<T>::min() || *i > std::numeric_limits<T>::max())
      return problem(field, "is out of range, got " + Shown(v));
    *out = static_cast<T>(*i);
  };
  auto boolean = [&](const json& v, const std::string& field, bool* out) {
    if (v.is_boolean()) {
      *out = v.get<bool>();
    } else {
      problem(field, "must be true or false, got " + Shown(v));
    }
  };
  // Three numbers or integers, (D, H, W); all or nothing.
  auto triple = [&](const json& v, const std::string& field, auto* out) {
    using T = typename std::remove_pointer_t<decltype(out)>::value_type;
    constexpr bool kIntegers = std::is_integral_v<T>;
    const std::string expected = absl::StrCat("must be an array of 3 ", kIntegers ? "integers" : "numbers");
    if (!v.is_array() || v.size() != 3) return problem(field, absl::StrCat(expected, ", got ", Shown(v)));
    auto values = *out;
    for (size_t a = 0; a < 3; ++a) {
      if constexpr (kIntegers) {
        auto i = AsInteger(v[a]);
        if (!i || *i < std::numeric_limits<T>::min() || *i > std::numeric_limits<T>::max())
          return problem(field, absl::StrCat(expected, ", got ", Shown(v)));
        values[a] = static_cast<T>(*i);
      } else {
        auto d = AsNumber(v[a]);
        if (!d) return problem(field, absl::StrCat(expected, ", got ", Shown(v)));
        values[a] = *d;
      }
    }
    *out = values;
  };
  auto unknown = [&](const std::string& field, const std::string& key, const std::map<std::string, std::string>& hints,
                     const std::string& known) {
    auto hint = hints.find(key);
    problem(field, hint != hints.end() ? absl::StrCat("unknown field (did you mean \"", hint->second, "\"?)")
                                       : absl::StrCat("unknown field (known: ", known, ")"));
  };

  const std::string known_fields = absl::StrJoin(kKnownFields, ", ");
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnownFields), std::end(kKnownFields), key) == std::end(kKnownFields))
      unknown(key, key, TopLevelHints(), known_fields);
  }
  if (j.contains("target_spacing")) triple(j["target_spacing"], "target_spacing", &plan.target_spacing);
  if (j.contains("transpose")) triple(j["transpose"], "transpose", &plan.transpose);
  if (j.contains("patch")) triple(j["patch"], "patch", &plan.patch);
  if (j.contains("crop") && j.contains("crop_to_nonzero")) {
    problem("crop_to_nonzero",
            "give \"crop\" alone (crop_to_nonzero is its older form: true = \"nonzero\", false = \"none\")");
  } else if (j.contains("crop")) {
    const json& v = j["crop"];
    plan.crop = CropModeFromName(v.is_string() ? v.get<std::string>() : "");
    if (!plan.crop) problem("crop", "must be \"body\", \"nonzero\" or \"none\", got " + Shown(v));
  } else if (j.contains("crop_to_nonzero")) {
    bool nonzero = true;
    const size_t before = problems->size();
    boolean(j["crop_to_nonzero"], "crop_to_nonzero", &nonzero);
    if (problems->size() == before) plan.crop = nonzero ? CropMode::kNonzero : CropMode::kNone;
  }
  if (j.contains("step")) number(j["step"], "step", &plan.step);
  if (j.contains("min_step")) number(j["min_step"], "min_step", &plan.min_step);
  if (j.contains("gaussian_sigma_scale"))
    number(j["gaussian_sigma_scale"], "gaussian_sigma_scale", &plan.gaussian_sigma_scale);
  if (j.contains("anisotropy_threshold"))
    number(j["anisotropy_threshold"], "anisotropy_threshold", &plan.anisotropy_threshold);
  if (j.contains("num_classes")) integer(j["num_classes"], "num_classes", &plan.num_classes);
  if (j.contains("mirror_axes")) {
    const json& v = j["mirror_axes"];
    if (!v.is_array()) {
      problem("mirror_axes", "must be an array of axes (0 = D, 1 = H, 2 = W), got " + Shown(v));
    } else {
      for (size_t i = 0; i < v.size(); ++i) {
        int axis = 0;
        const size_t before = problems->size();
        integer(v[i], absl::StrCat("mirror_axes[", i, "]"), &axis);
        if (problems->size() == before) plan.mirror_axes.push_back(axis);
      }
    }
  }

  if (j.contains("normalization")) {
    const json& v = j["normalization"];
    if (!v.is_array()) {
      problem("normalization", "must be an array with one object per input channel, got " + Shown(v));
    } else {
      plan.normalization.clear();
      for (size_t c = 0; c < v.size(); ++c) {
        const std::string f = absl::StrCat("normalization[", c, "]");
        ChannelNormalization n;
        n.scheme = ChannelNormalization::Scheme::kNone;  // the stand-in when the entry is unusable
        const json& e = v[c];
        if (!e.is_object()) {
          problem(f, "must be an object such as {\"scheme\": \"zscore\"}, got " + Shown(e));
          plan.normalization.push_back(n);
          continue;
        }
        std::vector<std::string> keys;  // what the scheme takes besides "scheme"
        if (!e.contains("scheme")) {
          problem(f + ".scheme", "missing (\"ct\", \"zscore\" or \"none\")");
        } else if (!e["scheme"].is_string() ||
                   (e["scheme"] != "ct" && e["scheme"] != "zscore" && e["scheme"] != "none")) {
          problem(f + ".scheme", "must be \"ct\", \"zscore\" or \"none\", got " + Shown(e["scheme"]));
        } else if (e["scheme"] == "ct") {
          keys = {"clip_low", "clip_high", "mean", "std"};
          ChannelNormalization ct;  // defaults stand in for fields with problems
          for (const std::string& k : keys) {
            double* out = k == "clip_low"    ? &ct.clip_low
                          : k == "clip_high" ? &ct.clip_high
                          : k == "mean"      ? &ct.mean
                                             : &ct.std;
            if (!e.contains(k)) {
              problem(absl::StrCat(f, ".", k), "missing (scheme \"ct\" needs clip_low, clip_high, mean and std)");
            } else {
              number(e[k], absl::StrCat(f, ".", k), out);
            }
          }
          n = ct;
        } else if (e["scheme"] == "zscore") {
          keys = {"use_nonzero_mask"};
          n.scheme = ChannelNormalization::Scheme::kZScore;
          if (e.contains("use_nonzero_mask"))
            boolean(e["use_nonzero_mask"], f + ".use_nonzero_mask", &n.use_nonzero_mask);
        }
        if (e.contains("scheme") && e["scheme"].is_string()) {
          const std::string scheme = e["scheme"].get<std::string>();
          const std::string takes = keys.empty() ? "nothing else" : absl::StrJoin(keys, ", ");
          for (const auto& [key, value] : e.items()) {
            if (key == "scheme" || std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
            if (scheme != "ct" && scheme != "zscore" && scheme != "none") continue;  // reported above
            auto hint = ChannelHints().find(key);
            problem(absl::StrCat(f, ".", key),
                    hint != ChannelHints().end() && (std::find(keys.begin(), keys.end(), hint->second) != keys.end() ||
                                                     hint->second == "scheme")
                        ? absl::StrCat("unknown field (did you mean \"", hint->second, "\"?)")
                        : absl::StrCat("unknown field for scheme \"", scheme, "\" (it takes ", takes, ")"));
          }
        }
        plan.normalization.push_back(n);
      }
    }
  }

  if (j.contains("labels")) {
    const json& v = j["labels"];
    if (!v.is_array()) {
      problem("labels", "must be an array of {\"value\", \"name\", \"rgb\"} objects, got " + Shown(v));
    } else {
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string f = absl::StrCat("labels[", i, "]");
        const json& e = v[i];
        if (!e.is_object()) {
          problem(f, "must be an object such as {\"value\": 1, \"name\": \"liver\", \"rgb\": [196, 98, 50]}, got " +
                         Shown(e));
          continue;
        }
        for (const auto& [key, value] : e.items())
          if (key != "value" && key != "name" && key != "rgb") unknown(f + "." + key, key, {}, "value, name, rgb");
        LabelInfo info;
        const size_t before = problems->size();
        if (!e.contains("value")) {
          problem(f + ".value", "missing (the label's value in the label map)");
        } else {
          integer(e["value"], f + ".value", &info.value);
        }
        const bool value_ok = problems->size() == before;
        if (e.contains("name")) {
          if (e["name"].is_string()) {
            info.name = e["name"].get<std::string>();
          } else {
            problem(f + ".name", "must be a string, got " + Shown(e["name"]));
          }
        }
        if (e.contains("rgb")) {
          std::array<int64_t, 3> rgb{};
          const size_t before_rgb = problems->size();
          triple(e["rgb"], f + ".rgb", &rgb);
          if (problems->size() == before_rgb) {
            if (std::any_of(rgb.begin(), rgb.end(), [](int64_t c) { return c < 0 || c > 255; })) {
              problem(f + ".rgb", "every component must be in [0, 255], got " + Shown(e["rgb"]));
            } else {
              for (int a = 0; a < 3; ++a) info.rgb[a] = static_cast<uint8_t>(rgb[a]);
            }
          }
        }
        if (value_ok) plan.labels.push_back(info);
      }
    }
  }
  return plan;
}

// Parse and value problems of a plan's JSON text, all of them.
Plan ReadPlanText(const std::string& text, std::vector<std::string>* problems) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    problems->push_back(Field("json", absl::StrCat("not valid JSON (", e.what(), ")")));
    return Plan();
  }
  if (!j.is_object()) {
    problems->push_back(Field("json", "not a JSON object, got " + Shown(j)));
    return Plan();
  }
  Plan plan = ReadPlan(j, problems);
  for (std::string& p : plan.Problems()) problems->push_back(std::move(p));
  return plan;
}

}  // namespace

std::vector<std::string> Plan::Problems() const {
  std::vector<std::string> problems;
  auto bad = [&](const std::string& field, const std::string& what) { problems.push_back(Field(field, what)); };
  if (std::any_of(target_spacing.begin(), target_spacing.end(),
                  [](double s) { return !std::isfinite(s) || s <= 0 || s > 1e4; }))
    bad("target_spacing", "every axis must be finite, > 0 and at most 1e4 (mm), got " + Shown(target_spacing));
  if (std::any_of(patch.begin(), patch.end(), [](int64_t p) { return p < 1 || p > 4096; }))
    bad("patch", "every axis must be in [1, 4096], got " + Shown(patch));
  std::array<int, 3> sorted = transpose;
  std::sort(sorted.begin(), sorted.end());
  if (sorted != std::array<int, 3>{0, 1, 2})
    bad("transpose", "must be a permutation of 0, 1, 2, got " + Shown(transpose));
  if (normalization.empty() || normalization.size() > 16)
    bad("normalization", absl::StrCat("needs one entry per input channel (1 to 16), got ", normalization.size()));
  for (size_t c = 0; c < normalization.size(); ++c) {
    const auto& n = normalization[c];
    const std::string f = absl::StrCat("normalization[", c, "]");
    if (n.scheme != ChannelNormalization::Scheme::kCT) continue;
    if (!std::isfinite(n.clip_low) || !std::isfinite(n.clip_high) || n.clip_low >= n.clip_high)
      bad(f, absl::StrCat("clip_low must be finite and below clip_high, got ", n.clip_low, " and ", n.clip_high));
    if (!std::isfinite(n.mean) || !std::isfinite(n.std) || n.std <= 0)
      bad(f, absl::StrCat("mean must be finite and std finite and > 0, got ", n.mean, " and ", n.std));
  }
  if (crop == CropMode::kBody && !normalization.empty() && normalization[0].scheme != ChannelNormalization::Scheme::kCT)
    bad("crop", absl::StrCat("\"body\" finds the body in Hounsfield units: normalization[0] must be \"ct\", got \"",
                             SchemeName(normalization[0].scheme), "\""));
  if (!(step > 0 && step <= 1)) bad("step", absl::StrCat("must be in (0, 1], got ", step));
  if (!(min_step > 0 && min_step <= 1)) bad("min_step", absl::StrCat("must be in (0, 1], got ", min_step));
  if (!(gaussian_sigma_scale > 0 && gaussian_sigma_scale <= 10))
    bad("gaussian_sigma_scale", absl::StrCat("must be in (0, 10], got ", gaussian_sigma_scale));
  std::set<int> axes;
  for (int a : mirror_axes) {
    if (a < 0 || a > 2) {
      bad("mirror_axes", absl::StrCat("axes are 0 (D), 1 (H), 2 (W), got ", a));
    } else if (!axes.insert(a).second) {
      bad("mirror_axes", absl::StrCat("axis ", a, " is listed twice"));
    }
  }
  if (!(anisotropy_threshold >= 1))
    bad("anisotropy_threshold", absl::StrCat("must be >= 1, got ", anisotropy_threshold));
  if (num_classes < 2 || num_classes > 65535) {
    bad("num_classes", absl::StrCat("must be in [2, 65535], got ", num_classes));
  } else {
    std::set<int> values;
    for (const auto& l : labels) {
      if (l.value < 0 || l.value >= num_classes) {
        bad("labels", absl::StrCat("value ", l.value, " is not a class (0..", num_classes - 1, ")"));
      } else if (!values.insert(l.value).second) {
        bad("labels", absl::StrCat("value ", l.value, " is listed twice"));
      }
    }
  }
  return problems;
}

CropMode Plan::ResolvedCrop() const {
  if (crop) return *crop;
  const bool ct = !normalization.empty() && normalization[0].scheme == ChannelNormalization::Scheme::kCT;
  return ct ? CropMode::kBody : CropMode::kNonzero;
}

const char* CropModeName(CropMode mode) {
  switch (mode) {
    case CropMode::kBody: return "body";
    case CropMode::kNonzero: return "nonzero";
    case CropMode::kNone: return "none";
  }
  return "?";
}

std::optional<CropMode> CropModeFromName(const std::string& name) {
  for (CropMode mode : {CropMode::kBody, CropMode::kNonzero, CropMode::kNone})
    if (name == CropModeName(mode)) return mode;
  return std::nullopt;
}

absl::Status Plan::Validate() const { return ProblemsStatus(Problems()); }

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
  j["crop"] = CropModeName(ResolvedCrop());
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
  std::vector<std::string> problems;
  Plan plan = ReadPlanText(text, &problems);
  if (!problems.empty()) return ProblemsStatus(problems);
  return plan;
}

absl::StatusOr<Plan> Plan::FromMetadata(const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find("unetrpp_plan");
  if (it == metadata.end()) return absl::NotFoundError("no \"unetrpp_plan\" in the weights' metadata");
  return FromJson(it->second);
}

std::vector<std::string> CheckPlanJson(const std::string& json_text, Plan* read) {
  std::vector<std::string> problems;
  Plan plan = ReadPlanText(json_text, &problems);
  if (read) *read = std::move(plan);
  return problems;
}

std::vector<std::string> PlanNetworkMismatches(const Plan& plan, int num_classes, std::array<int64_t, 3> patch,
                                               int input_channels) {
  std::vector<std::string> mismatches;
  if (plan.patch != patch)
    mismatches.push_back(absl::StrCat("plan.patch ", Shown(plan.patch), " but the network's is ", Shown(patch)));
  if (plan.num_classes != num_classes)
    mismatches.push_back(absl::StrCat("plan.num_classes ", plan.num_classes, " but the network's is ", num_classes));
  if (plan.input_channels() != input_channels)
    mismatches.push_back(absl::StrCat("plan.normalization has ", plan.input_channels(),
                                      " entries (one per input channel) but the network takes ", input_channels,
                                      " channel(s)"));
  return mismatches;
}

absl::StatusOr<Plan> PlanForNetwork(const std::string& plan_json, const std::map<std::string, std::string>& metadata,
                                    int num_classes, std::array<int64_t, 3> patch, int input_channels) {
  const std::string source = plan_json.empty() ? "the weights' \"unetrpp_plan\"" : "the plan file";
  absl::StatusOr<Plan> plan = plan_json.empty() ? Plan::FromMetadata(metadata) : Plan::FromJson(plan_json);
  if (plan_json.empty() && plan.status().code() == absl::StatusCode::kNotFound)
    plan = DefaultCtPlan(num_classes, patch, input_channels);
  if (!plan.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", plan.status().message()));
  const auto mismatches = PlanNetworkMismatches(*plan, num_classes, patch, input_channels);
  if (!mismatches.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(source, " differs from the network's: ", absl::StrJoin(mismatches, "; ")));
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
