// File descriptors the server may need at once, and raising the process's
// soft limit to what the system allows (its hard limit).
//
// Why: every DICOM instance of a request being decoded holds a descriptor (an
// in-memory file that DCMTK reads lazily, imageio/dicom.cc) until its series
// is decoded, so cpu_threads decodes of limits.max_input_files instances need
// that many beside the connections. Containers commonly start with a soft
// limit of 1024 and a far higher hard one. Called by main() once, before the
// server starts threads.
#ifndef UPP_SERVER_OPEN_FILES_H_
#define UPP_SERVER_OPEN_FILES_H_

#include <cstdint>

#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// Descriptors for cpu_threads DICOM decodes at once, plus 1024 for
// connections, logs, metrics and libraries; unset fields take their defaults.
uint64_t DescriptorsNeeded(const unetrpp::v1::ServerConfig& config);

struct OpenFileLimit {
  uint64_t before = 0;  // the soft limit found
  uint64_t now = 0;     // the soft limit after raising it (RLIM_INFINITY: none)
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit.
OpenFileLimit RaiseOpenFileLimit();

}  // namespace upp::server

#endif  // UPP_SERVER_OPEN_FILES_H_
