// GPU memory admission for jobs that live on a GPU (models[].job_device):
// each device may hold jobs whose estimated memory sums to at most one
// limit (limits.max_device_bytes_in_flight). A job that does not fit is not
// refused: the caller places it on the CPU instead (segment_call.cc).
//
// Ownership: ServiceState owns one. Threading: any thread; one small lock.
#ifndef UPP_SERVER_DEVICE_BUDGET_H_
#define UPP_SERVER_DEVICE_BUDGET_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace upp::server {

class DeviceBudget {
 public:
  explicit DeviceBudget(int64_t limit_bytes_per_device) : limit_(limit_bytes_per_device) {}

  // Adds `bytes` to `device`'s jobs and returns true, or returns false and
  // changes nothing when they would then pass the limit (or `bytes` is
  // negative). `bytes` may be INT64_MAX (an estimate that overflowed).
  bool Reserve(const std::string& device, int64_t bytes);
  // Gives back what a successful Reserve() took.
  void Release(const std::string& device, int64_t bytes);
  int64_t held(const std::string& device) const;

 private:
  const int64_t limit_;
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_DEVICE_BUDGET_H_
