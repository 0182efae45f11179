#include "model/device.h"

#include <torch/torch.h>

namespace upp::model {

bool DeviceAvailable(const DeviceSpec& device) {
  if (!device.cuda) return true;
  return torch::cuda::is_available() && device.index < static_cast<int>(torch::cuda::device_count());
}

}  // namespace upp::model
