#include "server/open_files.h"

#include <sys/resource.h>

#include "server/config.h"

namespace upp::server {

uint64_t DescriptorsNeeded(const unetrpp::v1::ServerConfig& config) {
  unetrpp::v1::ServerConfig c = config;
  ApplyDefaults(c);  // main() has the configuration as written
  return uint64_t{c.cpu_threads()} * c.limits().max_input_files() + 1024;
}

OpenFileLimit RaiseOpenFileLimit() {
  OpenFileLimit out;
  struct rlimit files {};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) return out;
  out.before = out.now = files.rlim_cur;
  if (files.rlim_cur == files.rlim_max) return out;
  files.rlim_cur = files.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &files) == 0) out.now = files.rlim_cur;
  return out;
}

}  // namespace upp::server
