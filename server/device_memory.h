// Device memory of the GPUs the server's models run on, for /metrics.
//
// Read through NVML (the NVIDIA driver's management library, what
// nvidia-smi, DCGM and Triton read), opened with dlopen at start: the server
// neither links nor needs it where there is no NVIDIA driver, and the
// figures are the device's own (every process's allocations, LibTorch's
// cached blocks included), the number that runs out when a GPU is full.
//
// Ownership: a DeviceMemoryCollector owns the NVML handle; Metrics registers
// it with the exposer. Threading: Collect() runs on the exposer's HTTP
// thread; NVML is thread-safe.
#ifndef UPP_SERVER_DEVICE_MEMORY_H_
#define UPP_SERVER_DEVICE_MEMORY_H_

#include <prometheus/collectable.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace upp::server {

// The NVML device that LibTorch's "cuda:<index>" is, from the environment
// alone, for when the CUDA runtime cannot be asked (its PCI bus id is used
// first, see Create): an NVML index ("3") or a device UUID ("GPU-...").
// `cuda_visible_devices` / `cuda_device_order`: the variables' values
// (nullptr: unset). The runtime numbers the visible devices 0.. in the order
// listed, and numbers devices fastest first unless CUDA_DEVICE_ORDER is
// PCI_BUS_ID, while NVML numbers them in PCI order; so a number is trusted
// only in PCI order or when NVML sees a single device. nullopt: hidden or
// ambiguous (the metric is then left out rather than put on the wrong GPU).
std::optional<std::string> PhysicalDevice(int cuda_index, const char* cuda_visible_devices,
                                          const char* cuda_device_order, unsigned int nvml_devices);

class DeviceMemoryCollector : public prometheus::Collectable {
 public:
  // For the "cuda:N" devices among `devices` (others are ignored). nullptr
  // when there are none or NVML cannot be opened (no NVIDIA driver): the
  // metric is then absent.
  static std::shared_ptr<DeviceMemoryCollector> Create(const std::vector<std::string>& devices);
  ~DeviceMemoryCollector() override;

  // upp_device_memory_used_bytes and upp_device_memory_total_bytes, one
  // series per device (label device="cuda:N").
  std::vector<prometheus::MetricFamily> Collect() const override;
  // The memory of `device` ("cuda:N"); nullopt when it is not one of this
  // collector's or NVML cannot read it. Any thread.
  std::optional<int64_t> TotalBytes(const std::string& device) const;

 private:
  struct Nvml;
  struct Device {
    std::string name;  // "cuda:N"
    void* handle;      // nvmlDevice_t
  };
  DeviceMemoryCollector(std::unique_ptr<Nvml> nvml, std::vector<Device> devices);
  std::unique_ptr<Nvml> nvml_;
  std::vector<Device> devices_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_DEVICE_MEMORY_H_
