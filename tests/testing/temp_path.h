// Paths for test files that no other test process uses: ctest runs the tests
// in parallel, each in its own process, and all of them share gtest's
// TempDir(), so a fixed file name there can be written by two at once.
#ifndef UPP_TESTS_TESTING_TEMP_PATH_H_
#define UPP_TESTS_TESTING_TEMP_PATH_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace upp::testing {

// TempDir()/<pid>_<name>.
inline std::string UniqueTempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_TEMP_PATH_H_
