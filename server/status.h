// model/ statuses into absl ones (absl into gRPC: proto/api.h). The
// conversion itself is inference/model_status.h; the server names it here.
#ifndef UPP_SERVER_STATUS_H_
#define UPP_SERVER_STATUS_H_

#include "inference/model_status.h"

namespace upp::server {

using inference::FromModelStatus;

}  // namespace upp::server

#endif  // UPP_SERVER_STATUS_H_
