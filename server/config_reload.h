// What a configuration re-read (SIGHUP) may change while serving, and what
// needs a restart. The one place that knows which fields are live: LiveConfig
// copies them; every other difference between the file and the running
// configuration is named as needing a restart (ReloadPlan::restart_only).
//
// Live: each model's version source and policy (version, weights,
// plan_file, repository, versions, version_policy: versions are loaded and
// unloaded as after LoadModel / UnloadModel), default_model, the request
// limits and admission limits (limits.*, except decode_threads,
// max_device_bytes_in_flight and max_health_watches_per_peer), timeouts,
// allow_client_priority, nonfinite_voxels and logging.level. Everything
// else (addresses, TLS, threads, auth, batching, tracing, models added or
// removed, a model's devices, precision, speed modes...) takes a restart.
//
// Threading: pure functions.
#ifndef UPP_SERVER_CONFIG_RELOAD_H_
#define UPP_SERVER_CONFIG_RELOAD_H_

#include <string>
#include <vector>

#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// `running` with the live fields of `next` (both after ApplyDefaults); the
// rest of `running` (and its models, by name) as it was.
unetrpp::v1::ServerConfig LiveConfig(const unetrpp::v1::ServerConfig& running, const unetrpp::v1::ServerConfig& next);

// A model entry's live part, its versions' source (version, weights,
// plan_file, repository, versions, version_policy), from `from` into `to`:
// what LiveConfig keeps of the file and ModelRegistry::Reconfigure loads.
void CopyVersionSource(const unetrpp::v1::ModelEntry& from, unetrpp::v1::ModelEntry* to);

// The fields in which `a` and `b` differ, as "limits.max_voxels" or
// "models[\"ct\"].weights" (models matched by name; one added or removed
// is "models[\"x\"]").
std::vector<std::string> ConfigDifferences(const unetrpp::v1::ServerConfig& a, const unetrpp::v1::ServerConfig& b);

// A re-read file `next` against the configuration the server started from
// (or last reloaded), both after ApplyDefaults.
struct ReloadPlan {
  unetrpp::v1::ServerConfig configured;   // what is in force after the reload
  std::vector<std::string> live;          // fields that change now
  std::vector<std::string> restart_only;  // fields of `next` left out until a restart
};
ReloadPlan PlanReload(const unetrpp::v1::ServerConfig& configured, const unetrpp::v1::ServerConfig& next);

}  // namespace upp::server

#endif  // UPP_SERVER_CONFIG_RELOAD_H_
