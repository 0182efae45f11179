#include "tools/cli_flags.h"

#include <cstdio>

#include "model/cpu_threads.h"

namespace upp::tools {

void RunFlags::Register(CLI::App& app, const std::string& batch_help) {
  app.add_option("--threads", threads, "CPU threads (0: all)");
  app.add_option("--batch", batch, batch_help);
}

void RunFlags::Apply() const { model::ConfigureCpuThreads(threads); }

void PhantomGridFlags::Register(CLI::App& app) {
  app.add_option("--max-inplane", max_inplane, "largest in-plane size (voxels)");
  app.add_option("--max-slices", max_slices, "largest number of slices");
}

int Fail(std::string_view tool, std::string_view message) {
  std::fprintf(stderr, "%.*s: %.*s\n", static_cast<int>(tool.size()), tool.data(), static_cast<int>(message.size()),
               message.data());
  return 1;
}

}  // namespace upp::tools
