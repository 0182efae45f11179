// The descriptor budget, and raising the soft limit to the hard one.
#include "server/open_files.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include "server/config.h"

namespace upp::server {
namespace {

TEST(OpenFilesTest, DecodesOfEveryThreadAreCounted) {
  auto c = ParseConfig("models { name: 'a' weights: 'w' }");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(DescriptorsNeeded(*c), 2u * 4096 + 1024);  // the defaults: 2 threads, 4096 files
  c = ParseConfig("cpu_threads: 8 limits { max_input_files: 100 } models { name: 'a' weights: 'w' }");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(DescriptorsNeeded(*c), 8u * 100 + 1024);
}

TEST(OpenFilesTest, TheSoftLimitIsRaisedToTheHardOne) {
  struct rlimit files {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_max != RLIM_INFINITY && files.rlim_max <= 64) GTEST_SKIP() << "hard limit too low to lower";
  const rlim_t hard = files.rlim_max;
  files.rlim_cur = 64;  // as a container might start us, but lower
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  const OpenFileLimit limit = RaiseOpenFileLimit();
  EXPECT_EQ(limit.before, 64u);
  EXPECT_EQ(limit.now, hard);
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  EXPECT_EQ(files.rlim_cur, hard);
}

}  // namespace
}  // namespace upp::server
