// How much memory this process may use: the cgroup limit of its container
// where there is one (cgroup v2 memory.max, else v1 memory.limit_in_bytes),
// else the machine's physical memory. The admission defaults derive from it,
// so that no sequence of admitted requests can exceed what the pod has.
//
// Also: giving freed heap back to the operating system after a large request.
// Thread-safe.
#ifndef UPP_SERVER_SYSTEM_MEMORY_H_
#define UPP_SERVER_SYSTEM_MEMORY_H_

#include <cstdint>
#include <string>

namespace upp::server {

// Bytes; physical memory when no (or an unlimited) cgroup limit applies.
int64_t AvailableMemoryBytes();

// The limit in a cgroup file's text ("max" or a number); -1 for none.
int64_t ParseCgroupLimit(const std::string& text);

// Returns freed heap pages to the OS (glibc malloc_trim). The model keeps its
// heap between windows for speed (model/cpu_threads.h); the server calls this
// when it goes idle, so a spike does not stay resident for ever.
void ReturnFreeMemory();

}  // namespace upp::server

#endif  // UPP_SERVER_SYSTEM_MEMORY_H_
