// Device memory gauges (server/device_memory.h): the CUDA_VISIBLE_DEVICES
// mapping, and NVML where a driver is present.
#include "server/device_memory.h"

#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include <cstdlib>

namespace upp::server {
namespace {

TEST(DeviceMemoryTest, CudaVisibleDevicesMapsLibTorchIndicesToPhysicalDevices) {
  // PCI order (or a single GPU): CUDA and NVML numbers agree.
  EXPECT_EQ(PhysicalDevice(1, nullptr, "PCI_BUS_ID", 4), "1");
  EXPECT_EQ(PhysicalDevice(0, nullptr, nullptr, 1), "0");
  EXPECT_EQ(PhysicalDevice(0, "3,1", "PCI_BUS_ID", 4), "3");
  EXPECT_EQ(PhysicalDevice(1, " 3, 1", "PCI_BUS_ID", 4), "1");
  EXPECT_EQ(PhysicalDevice(2, "3,1", "PCI_BUS_ID", 4), std::nullopt);
  EXPECT_EQ(PhysicalDevice(1, "2,x,5", "PCI_BUS_ID", 4), std::nullopt);  // the runtime stops at a bad entry
  EXPECT_EQ(PhysicalDevice(0, "", "PCI_BUS_ID", 4), std::nullopt);       // empty: no device visible
  EXPECT_EQ(PhysicalDevice(-1, nullptr, "PCI_BUS_ID", 4), std::nullopt);
  // Default (fastest-first) order on a multi-GPU host: numbers are ambiguous,
  // UUIDs are not.
  EXPECT_EQ(PhysicalDevice(0, nullptr, nullptr, 2), std::nullopt);
  EXPECT_EQ(PhysicalDevice(0, "1,0", "FASTEST_FIRST", 2), std::nullopt);
  EXPECT_EQ(PhysicalDevice(1, "GPU-aaaa,GPU-8a1b2c3d-0000-1111-2222-333344445555", nullptr, 2),
            "GPU-8a1b2c3d-0000-1111-2222-333344445555");
  // No CUDA device among the models: no collector, whatever the machine.
  EXPECT_EQ(DeviceMemoryCollector::Create({"cpu"}), nullptr);
}

TEST(DeviceMemoryTest, ReadsNvmlWhereThereIsADriver) {
  auto collector = DeviceMemoryCollector::Create({"cuda:0"});
  if (!collector) GTEST_SKIP() << "no NVIDIA driver (libnvidia-ml.so.1) or no device 0 here";
  const auto families = collector->Collect();
  ASSERT_EQ(families.size(), 2u);
  ASSERT_EQ(families[0].metric.size(), 1u);
  ASSERT_EQ(families[1].metric.size(), 1u);
  EXPECT_EQ(families[0].metric[0].label[0].value, "cuda:0");
  EXPECT_GT(families[1].metric[0].gauge.value, 1e9);  // total: a GPU has more than 1 GB
  EXPECT_LE(families[0].metric[0].gauge.value, families[1].metric[0].gauge.value);
}

}  // namespace
}  // namespace upp::server
