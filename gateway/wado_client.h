// Pull mode's fetch: a study or a series from a DICOMweb service by WADO-RS
// (PS3.18 10.4): GET <url>/studies/{study}[/series/{series}] with Accept:
// multipart/related; type="application/dicom"; transfer-syntax=* (as
// stored: the gateway's instance checks decide what it accepts). The
// response is handed to the multipart reader (gateway/multipart.h) piece by
// piece as it arrives, and its parts to `sink` (the STOW-RS receiver's
// StowRequest: the same spool files, instance checks and limits), so a body
// is never held whole.
//
// Thread-safe (each call has its own handle).
#ifndef UPP_GATEWAY_WADO_CLIENT_H_
#define UPP_GATEWAY_WADO_CLIENT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/multipart.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

struct WadoLimits {
  uint64_t max_bytes = uint64_t{2} << 30;  // the response body; cut off as it arrives
  absl::Duration max_time = absl::Hours(1);
};

// `field` names the source's configuration for errors. `series_uid` ""
// fetches the whole study. UIDs must be valid (IsValidUid): they are put in
// the URL as they are. The status (the body is never quoted: it may hold
// patient data):
//   NOT_FOUND           the source answered 404
//   UNAVAILABLE         it cannot be reached, or answered 5xx, 401, 408, 429
//   DEADLINE_EXCEEDED   the transfer took longer than max_time (headers
//                       included: a source silent before them too);
//                       max_time is at least 1 ms
//   RESOURCE_EXHAUSTED  the body is over max_bytes
//   FAILED_PRECONDITION another answer, or not multipart/related of
//                       application/dicom
//   INVALID_ARGUMENT    a malformed multipart body, or what the sink returned
// On an error the sink may have received some parts: the caller aborts it.
absl::Status FetchWadoRs(const unetrpp::v1::DicomWebDestination& source, const std::string& field,
                         const std::string& study_uid, const std::string& series_uid, const WadoLimits& limits,
                         MultipartReader::Sink* sink);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_WADO_CLIENT_H_
