#include "server/status.h"

#include <string>

namespace upp::server {

absl::Status FromModelStatus(const model::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.code()), status.message());
}

}  // namespace upp::server
