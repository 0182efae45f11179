#include "server/command_line.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "server/config.h"

namespace upp::server {

absl::StatusOr<unetrpp::v1::ServerConfig> AssembleConfig(const CommandLine& f,
                                                         const std::vector<std::string>& default_models) {
  unetrpp::v1::ServerConfig config;
  if (!f.config_path.empty()) {
    auto loaded = LoadConfigFile(f.config_path);
    if (!loaded.ok()) return loaded.status();
    config = *std::move(loaded);
  }
  if (!f.weights.empty()) {
    auto* m = config.add_models();
    m->set_name("default");
    m->set_weights(f.weights);
    m->set_plan_file(f.plan);
    // Named on the command line, it is the model a request without a name
    // gets, also next to the models of a --config (flags win over the file).
    if (!config.default_model().empty() && config.default_model() != "default")
      spdlog::warn("--weights: model \"default\" replaces the configuration's default_model \"{}\"",
                   config.default_model());
    config.set_default_model("default");
  }
  if (config.models().empty()) {
    for (const auto& candidate : default_models) {
      std::error_code ec;
      if (!std::filesystem::exists(candidate, ec)) continue;
      auto* m = config.add_models();
      m->set_name("phantom-ct");
      m->set_version("1");
      m->set_weights(candidate);
      // Its coarse companion (docs/model_card_coarse.md) serves `fastest`
      // and locates label subsets, when it lies beside it.
      const auto coarse = std::filesystem::path(candidate).replace_filename(kDefaultCoarseModelFile);
      if (std::filesystem::exists(coarse, ec)) {
        auto* c = config.add_models();
        c->set_name("phantom-ct-coarse");
        c->set_version("1");
        c->set_weights(coarse.string());
        config.mutable_models(0)->mutable_speed()->set_fastest_model(c->name());
      }
      break;
    }
    if (config.models().empty())
      return absl::FailedPreconditionError("no model configured (--config or --weights) and no default model found");
  }
  if (!f.listen.empty()) config.set_listen_address(f.listen);
  if (!f.metrics.empty()) config.set_metrics_address(f.metrics);
  if (!f.log_level.empty()) config.mutable_logging()->set_level(f.log_level);
  if (f.log_json) config.mutable_logging()->set_json(true);
  if (f.allow_anonymous) config.mutable_auth()->set_allow_anonymous(true);
  ApplyDefaults(config);
  return config;
}

}  // namespace upp::server
