// Command-line options that describe a UNETR++ architecture, shared by the
// model tools (upp-forward, upp-bench-model).
#ifndef UPP_TOOLS_MODEL_CLI_H_
#define UPP_TOOLS_MODEL_CLI_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/network.h"

namespace upp::tools {

struct ModelFlags {
  std::string preset;
  std::vector<int64_t> patch, depths, stem;
  std::optional<int64_t> feature_size, heads, classes, in_channels;
  std::string device = "cpu";
  std::string precision = "fp32";
  int threads = 0;

  void Register(CLI::App& app);
  // Preset (or the weights file's metadata when given and no preset is named)
  // plus explicit overrides, validated.
  model::StatusOr<model::ModelConfig> Resolve(const std::string& weights_path) const;
  model::StatusOr<model::NetworkOptions> Options() const;
  void ApplyThreads() const;
};

}  // namespace upp::tools

#endif  // UPP_TOOLS_MODEL_CLI_H_
