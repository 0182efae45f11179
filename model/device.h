// The one parser of device strings ("cpu", "cuda", "cuda:N") for the model,
// the inference job and the server's configuration. Torch-free: the server
// validates its configuration with it, and the LibTorch code turns the
// result into a torch::Device.
#ifndef UPP_MODEL_DEVICE_H_
#define UPP_MODEL_DEVICE_H_

#include <cstdlib>
#include <optional>
#include <string>

namespace upp::model {

struct DeviceSpec {
  bool cuda = false;
  int index = 0;  // CUDA device number
};

// nullopt for anything but "cpu", "cuda" (device 0) and "cuda:N", N >= 0.
inline std::optional<DeviceSpec> ParseDevice(const std::string& device) {
  if (device == "cpu") return DeviceSpec{};
  if (device == "cuda") return DeviceSpec{true, 0};
  const std::string prefix = "cuda:";
  if (device.size() <= prefix.size() || device.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const std::string digits = device.substr(prefix.size());
  if (digits.size() > 4 || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return DeviceSpec{true, std::atoi(digits.c_str())};
}

// Whether this LibTorch build and machine can run on `device` (always for
// the CPU; for CUDA, a CUDA build that sees a device of that number).
// device.cc (LibTorch); any thread.
bool DeviceAvailable(const DeviceSpec& device);

}  // namespace upp::model

#endif  // UPP_MODEL_DEVICE_H_
