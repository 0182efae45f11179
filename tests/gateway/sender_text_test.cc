// What a DICOM sender wrote, made safe for logs and reason files
// (gateway/sender_text.h).
#include "gateway/sender_text.h"

#include <gtest/gtest.h>

#include <string>

namespace upp::gateway {
namespace {

TEST(SenderTextTest, PrintableAsciiStaysEverythingElseIsEscaped) {
  EXPECT_EQ(SenderText("CT"), "CT");
  EXPECT_EQ(SenderText("MR T1 (3D)"), "MR T1 (3D)");
  // A forged second log line, a terminal escape, a backslash, non-ASCII.
  EXPECT_EQ(SenderText("CT\n[error] forged"), "CT\\x0a[error] forged");
  EXPECT_EQ(SenderText("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(SenderText("a\\x0a"), "a\\x5cx0a");  // an escape cannot be faked
  EXPECT_EQ(SenderText("\xc3\xa9"), "\\xc3\\xa9");
  EXPECT_EQ(SenderText(std::string("a\0b", 3)), "a\\x00b");
}

TEST(SenderTextTest, LongValuesAreCutAndSaySo) {
  const std::string long_value(10000, 'A');
  const std::string out = SenderText(long_value);
  EXPECT_EQ(out, std::string(kMaxSenderTextBytes, 'A') + "... (10000 bytes)");
  EXPECT_EQ(SenderText(long_value, 100).size(), 100 + std::string("... (10000 bytes)").size());
}

}  // namespace
}  // namespace upp::gateway
