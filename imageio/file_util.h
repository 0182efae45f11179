// Whole files into memory, and the files of a directory in a stable order:
// the one place the project's tools, clients and server read files.
// Thread-safe (no shared state).
#ifndef UPP_IMAGEIO_FILE_UTIL_H_
#define UPP_IMAGEIO_FILE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace upp::imageio {

// The file's bytes. NOT_FOUND when it cannot be opened; RESOURCE_EXHAUSTED
// (before reading) when it is larger than `max_bytes`.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, int64_t max_bytes = int64_t{1} << 40);

// A file mapped read-only, for reading a large file without copying it into
// the heap: its pages stay the kernel's page cache, which can drop them again
// (the DICOM gateway checks spooled instances of up to a GiB this way, on
// several association threads at once). Owns the mapping; thread-safe to
// read. NOT_FOUND / RESOURCE_EXHAUSTED as ReadWholeFile; the messages never
// name the file (its name may carry a UID).
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path, int64_t max_bytes);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void* data_;
  size_t size_;
};

// Regular files directly in `dir`, sorted by name (a DICOM series directory).
absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir);
// The contents of those files, in that order; INVALID_ARGUMENT when there are none.
absl::StatusOr<std::vector<std::string>> ReadDirectoryFiles(const std::string& dir);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_FILE_UTIL_H_
