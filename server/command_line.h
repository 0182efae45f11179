// The server's command line and how it combines with the configuration file:
// defaults < the file < explicit flags. Kept out of main.cc so that this
// precedence is tested (tests/server/command_line_test.cc): a container
// image must not pass flags that silently replace a mounted file's values.
//
// Threading: pure functions, called once at start.
#ifndef UPP_SERVER_COMMAND_LINE_H_
#define UPP_SERVER_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// The default model's coarse companion, looked for beside the default model.
inline constexpr char kDefaultCoarseModelFile[] = "phantom_ct_coarse_v1.safetensors";

// What the command line said; empty strings mean "not given".
struct CommandLine {
  std::string config_path, listen, metrics, weights, plan, log_level;
  bool log_json = false;
  bool allow_anonymous = false;  // --allow-anonymous: auth.allow_anonymous
};

// The configuration to serve: the file (if any), then `--weights` as model
// "default", then, when no model is named anywhere, the first of
// `default_models` that exists as model "phantom-ct"; explicit flags
// replace the file's values; ApplyDefaults fills the rest.
// Errors: the file's (NOT_FOUND / INVALID_ARGUMENT), or FAILED_PRECONDITION
// when there is no model at all.
absl::StatusOr<unetrpp::v1::ServerConfig> AssembleConfig(const CommandLine& flags,
                                                         const std::vector<std::string>& default_models);

}  // namespace upp::server

#endif  // UPP_SERVER_COMMAND_LINE_H_
