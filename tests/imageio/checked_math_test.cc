// The size-arithmetic guards at their exact wrap-around values.
#include "imageio/checked_math.h"

#include <gtest/gtest.h>

#include <limits>

namespace upp::imageio {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(CheckedMathTest, ProductsUpToAndBeyond2To63) {
  // 2^32 is an ordinary value in 64 bits (it was 0 after a 32-bit cast).
  EXPECT_EQ(CheckedProduct({32768, 32768, 4}), int64_t{1} << 32);
  EXPECT_EQ(CheckedMul(int64_t{1} << 31, int64_t{1} << 31), int64_t{1} << 62);
  // 2^63 does not fit.
  EXPECT_FALSE(CheckedMul(int64_t{1} << 32, int64_t{1} << 31).has_value());
  EXPECT_FALSE(CheckedProduct({int64_t{1} << 21, int64_t{1} << 21, int64_t{1} << 21}).has_value());
  EXPECT_EQ(CheckedMul(kMax, 1), kMax);
  EXPECT_FALSE(CheckedMul(kMax, 2).has_value());
  EXPECT_EQ(CheckedProduct({}), 1);
  EXPECT_EQ(CheckedProduct({5, 0, kMax}), 0);
}

TEST(CheckedMathTest, SumsAndNegatives) {
  EXPECT_EQ(CheckedAdd(kMax - 1, 1), kMax);
  EXPECT_FALSE(CheckedAdd(kMax, 1).has_value());
  EXPECT_FALSE(CheckedMul(-1, 4).has_value());
  EXPECT_FALSE(CheckedAdd(-1, 4).has_value());
  EXPECT_EQ(OrMax(std::nullopt), kMax);
  EXPECT_EQ(OrMax(7), 7);
}

TEST(CheckedMathTest, FloorOfDoubles) {
  EXPECT_EQ(CheckedFloor(2.9), 2);
  EXPECT_EQ(CheckedFloor(9223372036854774784.0), int64_t{9223372036854774784});  // largest double < 2^63
  EXPECT_FALSE(CheckedFloor(9223372036854775808.0).has_value());                 // 2^63
  EXPECT_FALSE(CheckedFloor(std::numeric_limits<double>::infinity()).has_value());
  EXPECT_FALSE(CheckedFloor(std::numeric_limits<double>::quiet_NaN()).has_value());
  EXPECT_FALSE(CheckedFloor(-1.0).has_value());
}

}  // namespace
}  // namespace upp::imageio
