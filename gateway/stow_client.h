// Sends the gateway's results (SEG, SR) to a DICOMweb service by STOW-RS
// (PS3.18 10.5): one POST <url>/studies per series with a multipart/related
// body of application/dicom parts, streamed from the files (libcurl).
// TLS: the peer's certificate and name are always verified (the system's
// CAs, or ca_file). Credentials are read from their files at each call, so
// a rotated token is picked up.
//
// The status follows the C-STORE sender's, so the processor retries the
// same way: UNAVAILABLE when the service cannot be reached, times out,
// answers 5xx, 408, 429, or refuses the credential (401; a rotated token
// may fix it); FAILED_PRECONDITION when it refuses an instance (202, 409,
// other 4xx). The response body is never logged (it may quote a UID).
//
// Thread-safe (each call has its own handle).
#ifndef UPP_GATEWAY_STOW_CLIENT_H_
#define UPP_GATEWAY_STOW_CLIENT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

absl::Status SendFilesStowRs(const unetrpp::v1::DicomWebDestination& destination,
                             const std::vector<std::string>& files);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_STOW_CLIENT_H_
