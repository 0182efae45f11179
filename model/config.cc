#include "model/config.h"

#include <nlohmann/json.hpp>
#include <utility>

namespace upp::model {
namespace {

// The enums' names in configurations, one table each for both directions.
constexpr std::pair<Projection, const char*> kProjectionNames[] = {{Projection::kSharedLinear, "shared_linear"},
                                                                   {Projection::kSeparateLinear, "separate_linear"},
                                                                   {Projection::kSharedMatrix, "shared_matrix"}};
constexpr std::pair<Fusion, const char*> kFusionNames[] = {{Fusion::kConcatProjected, "concat_projected"},
                                                           {Fusion::kSum, "sum"}};

template <typename Enum, size_t N>
const char* NameOf(Enum value, const std::pair<Enum, const char*> (&names)[N]) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  return "?";
}

// Reads j[key], when present, as one of `names`.
template <typename Enum, size_t N>
Status ReadEnum(const nlohmann::json& j, const char* key, const std::pair<Enum, const char*> (&names)[N], Enum& out) {
  if (!j.contains(key)) return OkStatus();
  const auto text = j.at(key).get<std::string>();
  for (const auto& [v, name] : names) {
    if (text == name) {
      out = v;
      return OkStatus();
    }
  }
  return InvalidArgumentError("model config: unknown " + std::string(key) + " '" + text + "'");
}

const char* ProjectionName(Projection p) { return NameOf(p, kProjectionNames); }
const char* FusionName(Fusion f) { return NameOf(f, kFusionNames); }

std::string Dims(const std::array<int64_t, 3>& a) {
  return std::to_string(a[0]) + "x" + std::to_string(a[1]) + "x" + std::to_string(a[2]);
}

}  // namespace

std::array<int64_t, 3> ModelConfig::StageGrid(int s) const {
  std::array<int64_t, 3> g{};
  for (int i = 0; i < 3; ++i) g[i] = patch[i] / stem[i] >> s;
  return g;
}

int64_t ModelConfig::StageTokens(int s) const {
  auto g = StageGrid(s);
  return g[0] * g[1] * g[2];
}

Status ModelConfig::Validate() const {
  auto bad = [](std::string m) { return InvalidArgumentError("model config: " + std::move(m)); };
  if (in_channels < 1) return bad("in_channels must be >= 1, got " + std::to_string(in_channels));
  if (num_classes < 1) return bad("num_classes must be >= 1, got " + std::to_string(num_classes));
  if (feature_size < 1) return bad("feature_size must be >= 1, got " + std::to_string(feature_size));
  if (num_heads < 1) return bad("num_heads must be >= 1, got " + std::to_string(num_heads));
  for (int i = 0; i < 3; ++i) {
    if (stem[i] < 1) return bad("stem must be positive in every axis, got " + Dims(stem));
    if (patch[i] < 1) return bad("patch must be positive in every axis, got " + Dims(patch));
    if (patch[i] % (stem[i] * 8) != 0) {
      return bad("patch " + Dims(patch) + " is not divisible by stem x 8 = " + std::to_string(stem[0] * 8) + "x" +
                 std::to_string(stem[1] * 8) + "x" + std::to_string(stem[2] * 8) + " (axis " + "DHW"[i] + ")");
    }
  }
  for (int s = 0; s < 4; ++s) {
    if (depths[s] < 1) return bad("depths[" + std::to_string(s) + "] must be >= 1");
    if (proj_sizes[s] < 1) return bad("proj_sizes[" + std::to_string(s) + "] must be >= 1");
  }
  if (decoder_depth < 1) return bad("decoder_depth must be >= 1");
  if (decoder_proj_size < 1) return bad("decoder_proj_size must be >= 1");
  // The narrowest EPA block is 2f wide; every wider one is a multiple of it.
  if (StageDim(0) % num_heads != 0) {
    return bad("channels 2*feature_size = " + std::to_string(StageDim(0)) +
               " not divisible by num_heads = " + std::to_string(num_heads));
  }
  // The stem's GroupNorm uses in_channels groups over 2f channels.
  if (StageDim(0) % in_channels != 0) {
    return bad("channels 2*feature_size = " + std::to_string(StageDim(0)) + " not divisible by in_channels = " +
               std::to_string(in_channels) + " (the stem's GroupNorm has in_channels groups)");
  }
  if (res_blocks_after_epa < 1 || res_blocks_after_epa > 2) {
    return bad("res_blocks_after_epa must be 1 or 2, got " + std::to_string(res_blocks_after_epa));
  }
  if (fusion == Fusion::kConcatProjected && StageDim(0) % 2 != 0) {
    return bad("concat fusion needs an even channel count");
  }
  return OkStatus();
}

std::string ModelConfig::ToJson() const {
  nlohmann::json j;
  j["preset"] = preset;
  j["in_channels"] = in_channels;
  j["num_classes"] = num_classes;
  j["patch"] = patch;
  j["stem"] = stem;
  j["feature_size"] = feature_size;
  j["depths"] = depths;
  j["decoder_depth"] = decoder_depth;
  j["num_heads"] = num_heads;
  j["proj_sizes"] = proj_sizes;
  j["decoder_proj_size"] = decoder_proj_size;
  j["projection"] = ProjectionName(projection);
  j["fusion"] = FusionName(fusion);
  j["res_blocks_after_epa"] = res_blocks_after_epa;
  return j.dump();
}

StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("model config: not a JSON object");
  }
  ModelConfig c;
  // Start from the preset when one is named, so a short config is enough.
  if (j.contains("preset") && j["preset"].is_string() && j["preset"] != "custom") {
    auto p = Preset(j["preset"].get<std::string>());
    if (!p.ok()) return p.status();
    c = *p;
  } else {
    c.preset = "custom";
  }
  try {
    auto get = [&](const char* key, auto& out) {
      if (j.contains(key)) j.at(key).get_to(out);
    };
    get("in_channels", c.in_channels);
    get("num_classes", c.num_classes);
    get("patch", c.patch);
    get("stem", c.stem);
    get("feature_size", c.feature_size);
    get("depths", c.depths);
    get("decoder_depth", c.decoder_depth);
    get("num_heads", c.num_heads);
    get("proj_sizes", c.proj_sizes);
    get("decoder_proj_size", c.decoder_proj_size);
    get("res_blocks_after_epa", c.res_blocks_after_epa);
    UPP_RETURN_IF_ERROR(ReadEnum(j, "projection", kProjectionNames, c.projection));
    UPP_RETURN_IF_ERROR(ReadEnum(j, "fusion", kFusionNames, c.fusion));
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("model config: ") + e.what());
  }
  UPP_RETURN_IF_ERROR(c.Validate());
  return c;
}

std::vector<std::string> PresetNames() { return {"synapse", "acdc", "lung", "tumor"}; }

StatusOr<ModelConfig> Preset(const std::string& name) {
  ModelConfig c;  // Defaults are the synapse preset.
  c.preset = name;
  if (name == "synapse") {
    return c;
  }
  if (name == "acdc" || name == "lung") {
    c.num_classes = name == "acdc" ? 4 : 2;
    c.patch = name == "acdc" ? std::array<int64_t, 3>{16, 160, 160} : std::array<int64_t, 3>{32, 192, 192};
    c.stem = {1, 4, 4};
    c.projection = Projection::kSeparateLinear;
    c.res_blocks_after_epa = 2;
    return c;
  }
  if (name == "tumor") {
    c.in_channels = 4;
    c.num_classes = 4;
    c.patch = {128, 128, 128};
    c.stem = {4, 4, 4};
    c.projection = Projection::kSharedMatrix;
    c.fusion = Fusion::kSum;
    return c;
  }
  return NotFoundError("unknown model preset '" + name + "' (known: synapse, acdc, lung, tumor)");
}

}  // namespace upp::model
