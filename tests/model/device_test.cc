// The one device-string parser (model/device.h).
#include "model/device.h"

#include <gtest/gtest.h>

namespace upp::model {
namespace {

TEST(DeviceTest, CpuCudaAndCudaN) {
  EXPECT_FALSE(ParseDevice("cpu")->cuda);
  EXPECT_TRUE(ParseDevice("cuda")->cuda);
  EXPECT_EQ(ParseDevice("cuda")->index, 0);
  EXPECT_EQ(ParseDevice("cuda:3")->index, 3);
  for (const char* bad : {"", "gpu0", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "cuda:99999", "CPU", "cpu:0"})
    EXPECT_FALSE(ParseDevice(bad).has_value()) << bad;
}

}  // namespace
}  // namespace upp::model
