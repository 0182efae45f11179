#include "server/device_budget.h"

namespace upp::server {

bool DeviceBudget::Reserve(const std::string& device, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  int64_t& held = held_[device];
  // Compared without adding: bytes may be INT64_MAX.
  if (bytes < 0 || bytes > limit_ - held) return false;
  held += bytes;
  return true;
}

void DeviceBudget::Release(const std::string& device, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  held_[device] -= bytes;
}

int64_t DeviceBudget::held(const std::string& device) const {
  absl::MutexLock lock(&mu_);
  const auto it = held_.find(device);
  return it == held_.end() ? 0 : it->second;
}

}  // namespace upp::server
