// upp-plan: checks a plan (docs/preprocessing.md, "The plan file") the way
// the server reads it, and reports every problem in one run: a server start
// loads the weights first and stops at the plan's first mistake.
//
//   upp-plan --check PLAN.json [--weights W.safetensors] [--print]
//   upp-plan --check W.safetensors [--print]     (the plan embedded in W)
//
// With weights (--weights, or FILE itself being a weights file) the plan is
// also held against the network's patch, classes and channels; only the
// safetensors header is read. Exit status: 0 "plan OK", 1 problems (all
// listed), 2 a file that cannot be read or a usage error.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "imageio/file_util.h"
#include "model/config.h"
#include "model/network.h"
#include "model/safetensors.h"
#include "preprocessing/plan.h"

namespace upp::tools {
namespace {

namespace pp = upp::preprocessing;

constexpr int64_t kMaxPlanBytes = int64_t{16} << 20;  // the server's limit for plan_file

struct Weights {
  std::map<std::string, std::string> metadata;
  std::optional<model::ModelConfig> config;
  std::string config_error;
};

// The header of a safetensors file: its metadata and the architecture in it.
std::optional<Weights> ReadWeights(const std::string& path, std::string* error) {
  auto reader = model::SafetensorsReader::Open(path);
  if (!reader.ok()) {
    *error = reader.status().message();
    return std::nullopt;
  }
  Weights w;
  w.metadata = (*reader)->metadata();
  auto config = model::ConfigFromMetadata(w.metadata);
  if (config.ok()) {
    w.config = *config;
  } else {
    w.config_error = config.status().message();
  }
  return w;
}

// A safetensors file: an 8-byte little-endian header length that fits the
// file, then the header's "{". A JSON text's first 8 bytes read as a length
// are far beyond its size.
bool IsWeightsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[9];
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) return false;
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | head[i];
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  return !ec && head[8] == '{' && length <= size - 8;
}

// The fields that fall back to a default when left out, and what the default
// means: not errors (a plan may rely on them), but a plan that leaves out its
// spacing or normalisation is usually a mistake.
std::vector<std::string> DefaultsUsed(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return {};
  const pp::Plan defaults;
  std::vector<std::string> notes;
  auto note = [&](const char* key, const std::string& what) {
    if (!j.contains(key)) notes.push_back(absl::StrCat("plan.", key, " not given: ", what));
  };
  note("target_spacing", absl::StrCat("[", absl::StrJoin(defaults.target_spacing, ","), "] mm"));
  note("normalization", "one CT channel clipped to [-1000, 1000], mean 0, std 1");
  note("patch", absl::StrCat("[", absl::StrJoin(defaults.patch, ","), "]"));
  note("num_classes", absl::StrCat(defaults.num_classes));
  note("labels", "no label table (no names or colours; a DICOM SEG output gets a segment per listed label only)");
  return notes;
}

int Check(const std::string& path, const std::string& weights_path, bool print) {
  std::optional<Weights> weights;
  std::string plan_text, source = path;
  std::vector<std::string> problems;
  if (!IsWeightsFile(path)) {
    auto text = imageio::ReadWholeFile(path, kMaxPlanBytes);
    if (!text.ok()) {
      std::fprintf(stderr, "upp-plan: %s cannot be read: %s\n", path.c_str(),
                   std::string(text.status().message()).c_str());
      return 2;
    }
    plan_text = std::move(*text);
  } else {
    std::string error;
    weights = ReadWeights(path, &error);
    if (!weights) {
      std::fprintf(stderr, "upp-plan: %s: %s\n", path.c_str(), error.c_str());
      return 2;
    }
    auto it = weights->metadata.find("unetrpp_plan");
    if (it == weights->metadata.end()) {
      std::printf(
          "1 problem in %s:\n  - no \"unetrpp_plan\" in the weights' metadata: the server would use generic CT "
          "settings. Embed one (tools/convert_checkpoint.py ... --plan FILE) or give the server --plan FILE\n",
          path.c_str());
      return 1;
    }
    plan_text = it->second;
    source = absl::StrCat(path, " (its \"unetrpp_plan\")");
  }
  if (!weights_path.empty()) {
    std::string error;
    weights = ReadWeights(weights_path, &error);
    if (!weights) {
      std::fprintf(stderr, "upp-plan: --weights %s: %s\n", weights_path.c_str(), error.c_str());
      return 2;
    }
  }

  pp::Plan plan;
  for (std::string& p : pp::CheckPlanJson(plan_text, &plan)) problems.push_back(std::move(p));
  if (weights && !weights->config) {
    problems.push_back("the weights' architecture cannot be read: " + weights->config_error);
  } else if (weights) {
    // A field that is itself wrong was read as its default: comparing that
    // with the network would report a difference the file does not have.
    auto has_problem = [&](const std::string& field) {
      const std::string prefix = absl::StrCat("plan.", field, ":");
      for (const auto& p : problems)
        if (absl::StartsWith(p, prefix)) return true;
      return false;
    };
    const model::ModelConfig& c = *weights->config;
    for (std::string& m :
         pp::PlanNetworkMismatches(plan, static_cast<int>(c.num_classes), c.patch, static_cast<int>(c.in_channels))) {
      const bool patch = absl::StartsWith(m, "plan.patch "), classes = absl::StartsWith(m, "plan.num_classes ");
      if ((patch && has_problem("patch")) || (classes && has_problem("num_classes")) ||
          (!patch && !classes && has_problem("normalization")))
        continue;
      problems.push_back(std::move(m));
    }
  }

  if (!problems.empty()) {
    std::printf("%zu problem%s in %s:\n", problems.size(), problems.size() == 1 ? "" : "s", source.c_str());
    for (const auto& p : problems) std::printf("  - %s\n", p.c_str());
  }
  for (const auto& n : DefaultsUsed(plan_text)) std::printf("note: %s\n", n.c_str());
  if (!problems.empty()) return 1;
  std::printf("plan OK: %s, patch [%s], %d classes, %d channel(s), target spacing [%s] mm%s\n", source.c_str(),
              absl::StrJoin(plan.patch, ",").c_str(), plan.num_classes, plan.input_channels(),
              absl::StrJoin(plan.target_spacing, ",").c_str(),
              weights ? ", agrees with the network" : " (give --weights to hold it against a network)");
  if (print) std::printf("%s\n", nlohmann::json::parse(plan.ToJson()).dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace upp::tools

int main(int argc, char** argv) {
  CLI::App app{"upp-plan: check a plan (docs/preprocessing.md) and report every problem at once"};
  std::string check, weights;
  bool print = false;
  app.add_option("--check", check, "plan JSON file, or a weights file whose embedded plan to check")->required();
  app.add_option("--weights", weights, "safetensors weights whose network the plan must fit");
  app.add_flag("--print", print, "print the plan as the server reads it (defaults filled in) when it is OK");
  CLI11_PARSE(app, argc, argv);
  return upp::tools::Check(check, weights, print);
}
