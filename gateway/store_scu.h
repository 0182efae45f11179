// Sends DICOM objects to the configured destination AE with C-STORE (DCMTK
// DcmSCU): one association per call, a presentation context per SOP class
// in explicit VR little endian (how the gateway writes them).
// Thread-safe (each call has its own association).
#ifndef UPP_GATEWAY_STORE_SCU_H_
#define UPP_GATEWAY_STORE_SCU_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// Part 10 files (paths). UNAVAILABLE when the destination cannot be reached
// or refuses the association (worth retrying); FAILED_PRECONDITION when it
// answers a C-STORE with a failure status.
absl::Status SendFiles(const unetrpp::v1::DicomDestination& destination, const std::vector<std::string>& files);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_STORE_SCU_H_
