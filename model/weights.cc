#include "model/weights.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "model/unetrpp.h"

namespace upp::model {
namespace {

torch::ScalarType ToTorch(DType d) {
  switch (d) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat32;
}

StatusOr<DType> FromTorch(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return DType::kF64;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt64: return DType::kI64;
    case torch::kInt32: return DType::kI32;
    case torch::kInt16: return DType::kI16;
    case torch::kInt8: return DType::kI8;
    case torch::kUInt8: return DType::kU8;
    case torch::kBool: return DType::kBool;
    default: return InvalidArgumentError(std::string("cannot store dtype ") + c10::toString(t));
  }
}

// A tensor viewing the mapped bytes. The mapping need not be aligned for the
// element type (a safetensors header can have any length); a misaligned view
// would be undefined behaviour for vectorised kernels, so such data is first
// copied into an aligned buffer.
torch::Tensor View(const SafetensorsReader& reader, const TensorInfo& info) {
  const uint8_t* p = reader.Data(info);
  auto dtype = ToTorch(info.dtype);
  if (reinterpret_cast<uintptr_t>(p) % DTypeSize(info.dtype) != 0) {
    auto t = torch::empty(info.shape, torch::TensorOptions().dtype(dtype));
    std::memcpy(t.data_ptr(), p, info.nbytes);
    return t;
  }
  return torch::from_blob(const_cast<uint8_t*>(p), info.shape, torch::TensorOptions().dtype(dtype));
}

std::string ShapeString(c10::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

bool IsDeepSupervision(const std::string& name) { return name.rfind("out2.", 0) == 0 || name.rfind("out3.", 0) == 0; }

}  // namespace

StatusOr<torch::Tensor> ReadTensor(const SafetensorsReader& reader, const TensorInfo& info) {
  try {
    return View(reader, info).clone();
  } catch (const c10::Error& e) {
    return InternalError("reading tensor '" + info.name + "': " + e.what_without_backtrace());
  }
}

StatusOr<torch::Tensor> ReadTensorAsFloat(const SafetensorsReader& reader, const TensorInfo& info) {
  try {
    return View(reader, info).to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  } catch (const c10::Error& e) {
    return InternalError("reading tensor '" + info.name + "': " + e.what_without_backtrace());
  }
}

Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  try {
    nlohmann::ordered_json header;
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::vector<torch::Tensor> data;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      auto dtype = FromTorch(t.scalar_type());
      if (!dtype.ok()) return InvalidArgumentError("tensor '" + name + "': " + dtype.status().message());
      auto c = t.detach().to(torch::kCPU).contiguous();
      const uint64_t n = c.numel() * c.element_size();
      header[name] = {{"dtype", DTypeName(*dtype)}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
      offset += n;
      data.push_back(std::move(c));
    }
    std::string h = header.dump();
    // Pad the header with spaces to a multiple of 8 so tensor data is aligned.
    h.append((8 - (h.size() + 8) % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) return NotFoundError("cannot create '" + path + "'");
    uint64_t len = h.size();
    char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>(len >> (8 * i) & 0xff);
    out.write(len_bytes, 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& c : data) {
      out.write(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
    }
    out.close();
    if (!out) return InternalError("writing '" + path + "' failed");
    return OkStatus();
  } catch (const c10::Error& e) {
    return InternalError(std::string("writing safetensors: ") + e.what_without_backtrace());
  }
}

std::string LoadReport::Summary() const {
  std::ostringstream os;
  os << missing.size() << " missing, " << unexpected.size() << " unexpected, " << mismatched.size() << " mismatched";
  for (const auto& k : missing) os << "\n  missing key: " << k;
  for (const auto& k : unexpected) os << "\n  unexpected key: " << k;
  for (const auto& k : mismatched) os << "\n  shape mismatch: " << k;
  return os.str();
}

Status LoadWeights(torch::nn::Module& module, const SafetensorsReader& reader, const LoadOptions& options,
                   LoadReport* report_out) {
  LoadReport report;
  try {
    torch::NoGradGuard no_grad;
    auto state = StateDict(module);
    std::set<std::string> module_keys;
    for (auto& [name, dst] : state) {
      module_keys.insert(name);
      if (options.ignore_deep_supervision && IsDeepSupervision(name)) continue;
      const TensorInfo* info = reader.Find(name);
      if (info == nullptr) {
        report.missing.push_back(name);
        continue;
      }
      const bool float_dst = dst.is_floating_point();
      const bool float_src = info->dtype == DType::kF64 || info->dtype == DType::kF32 || info->dtype == DType::kF16 ||
                             info->dtype == DType::kBF16;
      if (c10::IntArrayRef(info->shape) != dst.sizes() || float_dst != float_src) {
        report.mismatched.push_back(name + ": file " + ShapeString(info->shape) + " " + DTypeName(info->dtype) +
                                    " vs model " + ShapeString(dst.sizes()) + " " + c10::toString(dst.scalar_type()));
        continue;
      }
      dst.copy_(View(reader, *info));  // converts dtype and device in one pass
      ++report.loaded;
    }
    for (const auto& info : reader.tensors()) {
      if (options.ignore_deep_supervision && IsDeepSupervision(info.name)) continue;
      if (!module_keys.count(info.name)) report.unexpected.push_back(info.name);
    }
  } catch (const c10::Error& e) {
    return InternalError(std::string("loading weights: ") + e.what_without_backtrace());
  }
  const bool ok = report.ok();
  std::string summary = report.Summary();
  if (report_out != nullptr) *report_out = std::move(report);
  if (!ok && options.strict) return InvalidArgumentError("weights do not match the model: " + summary);
  return OkStatus();
}

}  // namespace upp::model
