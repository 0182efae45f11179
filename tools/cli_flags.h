// Command-line pieces shared by the tools that run the network in their own
// process (upp-segment, upp-eval-phantoms, upp-bench-pipeline, upp-train,
// upp-phantom): the threading, batching and phantom-grid flags mean the same
// in each, and failures are reported the same way.
#ifndef UPP_TOOLS_CLI_FLAGS_H_
#define UPP_TOOLS_CLI_FLAGS_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>

namespace upp::tools {

// --threads and --batch.
struct RunFlags {
  int threads = 0;    // LibTorch's CPU threads; 0: all cores
  int64_t batch = 1;  // what one network call (or training step) holds

  explicit RunFlags(int64_t default_batch = 1) : batch(default_batch) {}
  // `batch_help` says what a batch is to this tool.
  void Register(CLI::App& app, const std::string& batch_help = "windows per network call");
  // Sets up LibTorch's CPU threading (model/cpu_threads.h); call once, right
  // after parsing, before any other thread starts.
  void Apply() const;
};

// The largest grid of a synthetic phantom (--max-inplane, --max-slices).
struct PhantomGridFlags {
  int64_t max_inplane = 512, max_slices = 300;

  void Register(CLI::App& app);
};

// Writes "<tool>: <message>" to stderr; returns the tools' exit status on
// failure (1).
int Fail(std::string_view tool, std::string_view message);

// The same for a status (absl::Status or model::Status: anything with ToString()).
template <typename StatusT>
int FailWith(std::string_view tool, const StatusT& status) {
  return Fail(tool, status.ToString());
}

}  // namespace upp::tools

#endif  // UPP_TOOLS_CLI_FLAGS_H_
