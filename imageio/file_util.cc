#include "imageio/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path, int64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError("a file cannot be opened");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::NotFoundError("a file cannot be read");
  }
  if (st.st_size > max_bytes) {
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("a file is larger than ", max_bytes, " bytes"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* data = nullptr;
  if (size > 0) {
    data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      ::close(fd);
      return absl::ResourceExhaustedError("a file cannot be mapped");
    }
  }
  ::close(fd);  // the mapping keeps the file
  return std::unique_ptr<MappedFile>(new MappedFile(data, size));
}

MappedFile::~MappedFile() {
  if (size_ > 0) ::munmap(data_, size_);
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
