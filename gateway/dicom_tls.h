// DICOM over TLS for the gateway's listener and its sending side (DCMTK
// dcmtls on OpenSSL): one place that turns a DicomTls configuration into a
// transport layer. Profile: BCP 195 non-downgrading (TLS 1.2 and later,
// DCMTK's default). Includes DCMTK headers: only for gateway/ sources.
#ifndef UPP_GATEWAY_DICOM_TLS_H_
#define UPP_GATEWAY_DICOM_TLS_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmtls/tlslayer.h>

#include <memory>

#include "absl/status/statusor.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// An acceptor (listener) requires peers' certificates when a CA is given;
// a requestor always verifies the peer against the CA. INVALID_ARGUMENT
// naming the file that cannot be loaded or a key that does not match.
absl::StatusOr<std::unique_ptr<DcmTLSTransportLayer>> MakeTlsLayer(const unetrpp::v1::DicomTls& tls, bool acceptor);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_DICOM_TLS_H_
