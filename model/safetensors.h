// Reading safetensors files: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes.
//
// The reader maps the file read-only (mmap) and hands out pointers into the
// mapping, so loading weights copies each tensor exactly once, into its
// destination. Every header field is checked before anything is allocated
// from it: a 100-byte file cannot make us allocate gigabytes.
//
// Torch-free. A SafetensorsReader is immutable after Open(), so any number of
// threads may read it at once; it owns the mapping and must outlive the
// pointers it returns.
#ifndef UPP_MODEL_SAFETENSORS_H_
#define UPP_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/status.h"

namespace upp::model {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* DTypeName(DType dtype);  // "F32", ...
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  size_t offset = 0;  // from the start of the data section
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsReader {
 public:
  // The header may be at most this large (the format's own reference reader
  // uses the same bound).
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  // Maps the file. NOT_FOUND if it cannot be opened; INVALID_ARGUMENT or
  // DATA_LOSS (truncated) with a message naming the problem otherwise.
  static StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);
  // Parses bytes held in memory (e.g. received over the network); copies them.
  static StatusOr<std::unique_ptr<SafetensorsReader>> FromBytes(const void* data, size_t size);

  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  // In file order (sorted by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Pointer to the tensor's bytes inside the mapping (not necessarily aligned).
  const uint8_t* Data(const TensorInfo& info) const { return data_ + info.offset; }

 private:
  SafetensorsReader() = default;
  Status Parse(const std::string& origin);

  const uint8_t* base_ = nullptr;  // whole file
  size_t size_ = 0;
  bool mapped_ = false;  // base_ is an mmap to unmap, else owned_ holds it
  std::vector<uint8_t> owned_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace upp::model

#endif  // UPP_MODEL_SAFETENSORS_H_
