// The fuzz targets run the readers at the server's production limits
// (max_voxels 2^30, the readers' defaults), with the admission the server
// applies before decoding: here a fixed budget under libFuzzer's 2 GiB RSS
// limit, where the server uses half the memory it may use
// (server/system_memory.h). A fuzz input can then cost what a request
// admitted by the server could, and no more.
#ifndef UPP_TESTS_FUZZ_FUZZ_ADMISSION_H_
#define UPP_TESTS_FUZZ_FUZZ_ADMISSION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "imageio/checked_math.h"
#include "imageio/geometry.h"

namespace upp::fuzz {

inline constexpr int64_t kAdmissionBudget = int64_t{1} << 30;

inline absl::Status Admit(int64_t bytes) {
  return bytes > kAdmissionBudget ? absl::ResourceExhaustedError("over the fuzz admission budget") : absl::OkStatus();
}

// What the server's reservation does with the readers' `reserve` calls (a
// deflated file held whole, DCMTK's heap per element): they add up, within
// the budget, for one input.
class Reservation {
 public:
  absl::Status Add(int64_t bytes) {
    bytes_ = imageio::OrMax(imageio::CheckedAdd(bytes_, bytes));
    return Admit(bytes_);
  }

 private:
  int64_t bytes_ = 0;
};

// DICOM: the float volume and as much again for decoded frames, as the server reserves.
inline absl::Status AdmitSeries(const imageio::Geometry& g) {
  return Admit(imageio::OrMax(imageio::CheckedProduct({g.size[0], g.size[1], g.size[2], 8})));
}

}  // namespace upp::fuzz

#endif  // UPP_TESTS_FUZZ_FUZZ_ADMISSION_H_
