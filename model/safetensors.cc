#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace upp::model {
namespace {

bool ParseDType(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16}, {"I64", DType::kI64},
      {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},   {"U8", DType::kU8},     {"BOOL", DType::kBool}};
  for (const auto& [name, dtype] : kNames) {
    if (s == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

// a * b, false on overflow.
bool MulOverflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool: return 1;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsReader::~SafetensorsReader() {
  if (mapped_ && base_ != nullptr) munmap(const_cast<uint8_t*>(base_), size_);
}

StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return NotFoundError("cannot open weights file '" + path + "': " + std::strerror(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError("'" + path + "' is not a regular file");
  }
  std::unique_ptr<SafetensorsReader> r(new SafetensorsReader());
  r->size_ = static_cast<size_t>(st.st_size);
  if (r->size_ > 0) {
    void* p = mmap(nullptr, r->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return InternalError("cannot map '" + path + "': " + std::strerror(errno));
    }
    r->base_ = static_cast<const uint8_t*>(p);
    r->mapped_ = true;
  }
  ::close(fd);
  UPP_RETURN_IF_ERROR(r->Parse("'" + path + "'"));
  return r;
}

StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::FromBytes(const void* data, size_t size) {
  std::unique_ptr<SafetensorsReader> r(new SafetensorsReader());
  const auto* p = static_cast<const uint8_t*>(data);
  r->owned_.assign(p, p + size);
  r->base_ = r->owned_.data();
  r->size_ = size;
  UPP_RETURN_IF_ERROR(r->Parse("safetensors buffer"));
  return r;
}

const TensorInfo* SafetensorsReader::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Status SafetensorsReader::Parse(const std::string& origin) {
  if (size_ < 8) {
    return DataLossError(origin + ": truncated (" + std::to_string(size_) +
                         " bytes; a safetensors file starts with an 8-byte header length)");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | base_[i];  // little endian
  if (header_len > kMaxHeaderBytes) {
    return InvalidArgumentError(origin + ": header length " + std::to_string(header_len) + " exceeds the " +
                                std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  if (header_len > size_ - 8) {
    return DataLossError(origin + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                         std::to_string(size_) + " bytes)");
  }
  data_ = base_ + 8 + header_len;
  const size_t data_size = size_ - 8 - header_len;

  nlohmann::json header = nlohmann::json::parse(base_ + 8, base_ + 8 + header_len, nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded()) return InvalidArgumentError(origin + ": header is not valid JSON");
  if (!header.is_object()) return InvalidArgumentError(origin + ": header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return InvalidArgumentError(origin + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return InvalidArgumentError(origin + ": __metadata__ value '" + m.key() + "' is not a string");
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = origin + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return InvalidArgumentError(where + " lacks dtype, shape or data_offsets");
    }
    TensorInfo info;
    info.name = name;
    if (!v["dtype"].is_string() || !ParseDType(v["dtype"].get<std::string>(), &info.dtype)) {
      return InvalidArgumentError(where + " has unsupported dtype " + v["dtype"].dump() +
                                  " (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    }
    if (!v["shape"].is_array()) return InvalidArgumentError(where + ": shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) {
        return InvalidArgumentError(where + ": shape entries must be non-negative integers");
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || MulOverflow(numel, dim, &numel)) {
        return InvalidArgumentError(where + ": shape overflows");
      }
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return InvalidArgumentError(where + ": data_offsets must be two non-negative integers");
    }
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    uint64_t expected = 0;
    if (MulOverflow(numel, DTypeSize(info.dtype), &expected)) {
      return InvalidArgumentError(where + ": byte size overflows");
    }
    if (begin > end || end - begin != expected) {
      return InvalidArgumentError(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  ") do not match " + std::to_string(expected) + " bytes of " + DTypeName(info.dtype) +
                                  " data for its shape");
    }
    if (end > data_size) {
      return DataLossError(where + ": data ends at byte " + std::to_string(end) + " but the file holds only " +
                           std::to_string(data_size) + " data bytes (truncated file?)");
    }
    info.offset = begin;
    info.nbytes = expected;
    tensors_.push_back(std::move(info));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  return OkStatus();
}

}  // namespace upp::model
