#include "server/device_memory.h"

#include <dlfcn.h>
#include <prometheus/metric_family.h>

#include <cstdlib>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/config.h"

namespace upp::server {
namespace {

// The few NVML declarations used, from NVIDIA's documented, ABI-stable C
// API (nvml.h is not packaged in Debian main; the library comes with the
// driver). nvmlMemory_t is the v1 struct.
struct NvmlMemory {
  unsigned long long total, free, used;
};
using NvmlReturn = int;  // NVML_SUCCESS = 0
constexpr NvmlReturn kNvmlSuccess = 0;
using NvmlDevice = void*;

}  // namespace

struct DeviceMemoryCollector::Nvml {
  void* library = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*by_uuid)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*by_pci)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*count)(unsigned int*) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;

  ~Nvml() {
    if (shutdown) shutdown();
    if (library) dlclose(library);
  }
  bool Open() {
    library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) return false;
    init = reinterpret_cast<decltype(init)>(dlsym(library, "nvmlInit_v2"));
    by_index = reinterpret_cast<decltype(by_index)>(dlsym(library, "nvmlDeviceGetHandleByIndex_v2"));
    by_uuid = reinterpret_cast<decltype(by_uuid)>(dlsym(library, "nvmlDeviceGetHandleByUUID"));
    memory = reinterpret_cast<decltype(memory)>(dlsym(library, "nvmlDeviceGetMemoryInfo"));
    by_pci = reinterpret_cast<decltype(by_pci)>(dlsym(library, "nvmlDeviceGetHandleByPciBusId_v2"));
    count = reinterpret_cast<decltype(count)>(dlsym(library, "nvmlDeviceGetCount_v2"));
    auto* stop = reinterpret_cast<decltype(shutdown)>(dlsym(library, "nvmlShutdown"));
    if (!init || !by_index || !by_uuid || !by_pci || !count || !memory || !stop || init() != kNvmlSuccess) return false;
    shutdown = stop;  // only after a successful init
    return true;
  }
};

std::optional<std::string> PhysicalDevice(int cuda_index, const char* cuda_visible_devices,
                                          const char* cuda_device_order, unsigned int nvml_devices) {
  if (cuda_index < 0) return std::nullopt;
  const bool pci_order = cuda_device_order != nullptr && absl::string_view(cuda_device_order) == "PCI_BUS_ID";
  const bool numbers_agree = pci_order || nvml_devices == 1;
  if (cuda_visible_devices == nullptr) {
    if (!numbers_agree) return std::nullopt;
    return std::to_string(cuda_index);
  }
  // The CUDA runtime stops at the first invalid entry; so do we.
  std::vector<std::string> visible;
  for (absl::string_view entry : absl::StrSplit(cuda_visible_devices, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    int index = 0;
    if (absl::SimpleAtoi(entry, &index) && index >= 0) {
      visible.emplace_back(std::to_string(index));
    } else if (absl::StartsWith(entry, "GPU-") || absl::StartsWith(entry, "MIG-")) {
      visible.emplace_back(entry);
    } else {
      break;
    }
  }
  if (cuda_index >= static_cast<int>(visible.size())) return std::nullopt;
  const std::string& chosen = visible[cuda_index];
  if (!absl::StartsWith(chosen, "GPU-") && !absl::StartsWith(chosen, "MIG-") && !numbers_agree) return std::nullopt;
  return chosen;
}

std::shared_ptr<DeviceMemoryCollector> DeviceMemoryCollector::Create(const std::vector<std::string>& devices) {
  std::set<int> cuda;
  for (const std::string& d : devices)
    if (const auto index = CudaIndex(d)) cuda.insert(*index);
  if (cuda.empty()) return nullptr;
  auto nvml = std::make_unique<Nvml>();
  if (!nvml->Open()) return nullptr;
  // The CUDA runtime, where a CUDA build of LibTorch has loaded it, names
  // each of its devices by PCI bus id: no numbering to reconcile.
  using PciBusIdFn = int (*)(char*, int, int);  // cudaDeviceGetPCIBusId(char*, int len, int device)
  auto pci_bus_id = reinterpret_cast<PciBusIdFn>(dlsym(RTLD_DEFAULT, "cudaDeviceGetPCIBusId"));
  unsigned int nvml_devices = 0;
  if (nvml->count(&nvml_devices) != kNvmlSuccess) nvml_devices = 0;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const char* order = std::getenv("CUDA_DEVICE_ORDER");
  std::vector<Device> found;
  for (int index : cuda) {
    NvmlDevice handle = nullptr;
    char bus[64] = {0};
    NvmlReturn rc = -1;
    if (pci_bus_id != nullptr && pci_bus_id(bus, sizeof(bus), index) == 0) {
      rc = nvml->by_pci(bus, &handle);
    } else if (const auto physical = PhysicalDevice(index, visible, order, nvml_devices)) {
      unsigned int n = 0;
      rc = absl::SimpleAtoi(*physical, &n) ? nvml->by_index(n, &handle) : nvml->by_uuid(physical->c_str(), &handle);
    }
    if (rc == kNvmlSuccess) found.push_back({"cuda:" + std::to_string(index), handle});
  }
  if (found.empty()) return nullptr;
  return std::shared_ptr<DeviceMemoryCollector>(new DeviceMemoryCollector(std::move(nvml), std::move(found)));
}

DeviceMemoryCollector::DeviceMemoryCollector(std::unique_ptr<Nvml> nvml, std::vector<Device> devices)
    : nvml_(std::move(nvml)), devices_(std::move(devices)) {}

DeviceMemoryCollector::~DeviceMemoryCollector() = default;

std::optional<int64_t> DeviceMemoryCollector::TotalBytes(const std::string& device) const {
  for (const Device& d : devices_) {
    NvmlMemory m{};
    if (d.name == device && nvml_->memory(d.handle, &m) == kNvmlSuccess) return static_cast<int64_t>(m.total);
  }
  return std::nullopt;
}

std::vector<prometheus::MetricFamily> DeviceMemoryCollector::Collect() const {
  prometheus::MetricFamily used{"upp_device_memory_used_bytes",
                                "GPU memory in use on the device (all processes), from NVML",
                                prometheus::MetricType::Gauge,
                                {}};
  prometheus::MetricFamily total{
      "upp_device_memory_total_bytes", "GPU memory of the device, from NVML", prometheus::MetricType::Gauge, {}};
  for (const Device& d : devices_) {
    NvmlMemory m{};
    if (nvml_->memory(d.handle, &m) != kNvmlSuccess) continue;
    prometheus::ClientMetric u, t;
    u.label = t.label = {{"device", d.name}};
    u.gauge.value = static_cast<double>(m.used);
    t.gauge.value = static_cast<double>(m.total);
    used.metric.push_back(std::move(u));
    total.metric.push_back(std::move(t));
  }
  return {used, total};
}

}  // namespace upp::server
