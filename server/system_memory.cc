#include "server/system_memory.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

#include "imageio/file_util.h"

namespace upp::server {
namespace {

int64_t ReadCgroupFile(const char* path) {
  auto text = imageio::ReadWholeFile(path, 4096);
  return text.ok() ? ParseCgroupLimit(*text) : -1;
}

}  // namespace

int64_t ParseCgroupLimit(const std::string& text) {
  if (text.empty() || text.rfind("max", 0) == 0) return -1;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str()) return -1;
  // cgroup v1 writes "no limit" as a huge page-rounded number.
  if (v >= (1ull << 62)) return -1;
  return static_cast<int64_t>(v);
}

int64_t AvailableMemoryBytes() {
  const int64_t physical = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  int64_t limit = ReadCgroupFile("/sys/fs/cgroup/memory.max");
  if (limit < 0) limit = ReadCgroupFile("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  return limit > 0 && limit < physical ? limit : physical;
}

void ReturnFreeMemory() { malloc_trim(0); }

}  // namespace upp::server
