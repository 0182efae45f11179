// Whole files into memory, and the files of a directory in a stable order:
// the one place the project's tools, clients and server read files.
// Thread-safe (no shared state).
#ifndef UPP_IMAGEIO_FILE_UTIL_H_
#define UPP_IMAGEIO_FILE_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace upp::imageio {

// The file's bytes. NOT_FOUND when it cannot be opened; RESOURCE_EXHAUSTED
// (before reading) when it is larger than `max_bytes`.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, int64_t max_bytes = int64_t{1} << 40);

// Regular files directly in `dir`, sorted by name (a DICOM series directory).
absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir);
// The contents of those files, in that order; INVALID_ARGUMENT when there are none.
absl::StatusOr<std::vector<std::string>> ReadDirectoryFiles(const std::string& dir);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_FILE_UTIL_H_
