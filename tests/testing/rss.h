// Resident-memory probes for tests that bound what a hostile input may cost:
// reset the kernel's high-water mark, run the call, read the peak.
#ifndef UPP_TESTS_TESTING_RSS_H_
#define UPP_TESTS_TESTING_RSS_H_

#include <cstdint>
#include <fstream>
#include <string>

namespace upp::testing {

// A field of /proc/self/status in bytes ("VmHWM", "VmRSS"); -1 if absent.
inline int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key) {
    if (key == field + ":") {
      in >> kib >> unit;
      return kib * 1024;
    }
    std::getline(in, unit);
  }
  return -1;
}

// Resets the peak (VmHWM) to the current RSS (Linux: clear_refs "5"), so that
// an earlier test's peak cannot hide this one's, and returns the current RSS.
inline int64_t ResetPeakRss() {
  std::ofstream("/proc/self/clear_refs") << "5";
  return ProcStatusBytes("VmRSS");
}

inline int64_t PeakRssBytes() { return ProcStatusBytes("VmHWM"); }

// A bound on RSS growth as a test asserts it: `bytes`, except under
// ThreadSanitizer, whose shadow memory and access history grow with every
// allocation (deploy/tsan.sh looks for races there, not for memory bounds).
inline int64_t RssBound(int64_t bytes) {
#if defined(__SANITIZE_THREAD__)
  return bytes * 64;
#else
  return bytes;
#endif
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_RSS_H_
