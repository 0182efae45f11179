// The upload collector: what it allocates is what it says it will, before it
// allocates it (the server reserves that against its memory limit).
#include "server/request_validation.h"

#include <gtest/gtest.h>

namespace upp::server {
namespace {

unetrpp::v1::InputChunk Chunk(uint32_t index, size_t bytes) {
  unetrpp::v1::InputChunk c;
  c.set_input_index(index);
  c.set_data(std::string(bytes, 'x'));
  return c;
}

TEST(InputCollectorTest, ReservedBytesAreTheAllocatedOnes) {
  RequestLimits limits;
  limits.max_input_bytes = 64 << 20;
  InputCollector collector(limits, unetrpp::v1::INPUT_FORMAT_DICOM, 1);
  int64_t reserved = 0;
  for (int i = 0; i < 37; ++i) {  // one file in 37 chunks of 300 KB
    auto c = Chunk(0, 300000);
    reserved += collector.BytesToAdd(c);
    ASSERT_TRUE(collector.Add(c).ok());
    const std::string& file = collector.inputs()[0];
    ASSERT_EQ(reserved, static_cast<int64_t>(file.capacity())) << "after chunk " << i;
  }
  const std::string& file = collector.inputs()[0];
  EXPECT_EQ(file.size(), 37u * 300000);
  EXPECT_LE(file.capacity(), 2 * file.size());  // doubling: at most twice what arrived
  auto other = Chunk(1, 1000);                  // a new file takes the chunk's buffer over
  EXPECT_EQ(collector.BytesToAdd(other), 1000);
}

TEST(InputCollectorTest, GrowthStopsAtTheUploadLimit) {
  RequestLimits limits;
  limits.max_input_bytes = 1000000;
  InputCollector collector(limits, unetrpp::v1::INPUT_FORMAT_NIFTI, 1);
  int64_t reserved = 0;
  for (int i = 0; i < 3; ++i) {
    auto c = Chunk(0, 300000);
    reserved += collector.BytesToAdd(c);
    ASSERT_TRUE(collector.Add(c).ok());
  }
  EXPECT_EQ(reserved, static_cast<int64_t>(collector.inputs()[0].capacity()));
  EXPECT_LE(collector.inputs()[0].capacity(), 1000000u);
}

}  // namespace
}  // namespace upp::server
