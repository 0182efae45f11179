#include "imageio/file_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace upp::imageio {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, int64_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  if (size > max_bytes)
    return absl::ResourceExhaustedError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
  in.seekg(0);
  if (size == 0) {
    // Pseudo-files (/proc, /sys) report no size: read to the end, bounded.
    std::string bytes;
    char buffer[4096];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
      bytes.append(buffer, static_cast<size_t>(in.gcount()));
      if (static_cast<int64_t>(bytes.size()) > max_bytes)
        return absl::ResourceExhaustedError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
    return bytes;
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  if (!in.read(bytes.data(), size)) return absl::DataLossError(absl::StrCat("reading ", path, " failed"));
  return bytes;
}

absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file()) files.push_back(e.path().string());
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<std::vector<std::string>> ReadDirectoryFiles(const std::string& dir) {
  auto paths = ListFiles(dir);
  if (!paths.ok()) return paths.status();
  if (paths->empty()) return absl::InvalidArgumentError(absl::StrCat(dir, " holds no files"));
  std::vector<std::string> contents;
  for (const auto& p : *paths) {
    auto bytes = ReadWholeFile(p);
    if (!bytes.ok()) return bytes.status();
    contents.push_back(std::move(*bytes));
  }
  return contents;
}

}  // namespace upp::imageio
