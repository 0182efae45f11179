#include "gateway/dicom_tls.h"

#include "absl/strings/str_cat.h"

namespace upp::gateway {

absl::StatusOr<std::unique_ptr<DcmTLSTransportLayer>> MakeTlsLayer(const unetrpp::v1::DicomTls& tls, bool acceptor) {
  auto layer = std::make_unique<DcmTLSTransportLayer>(acceptor ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFTrue);
  if (layer->setTLSProfile(TSP_Profile_BCP195_ND).bad() || layer->activateCipherSuites().bad())
    return absl::InternalError("DICOM TLS: cannot set up the BCP 195 profile");
  if (layer->setPrivateKeyFile(tls.key_file().c_str(), DCF_Filetype_PEM).bad())
    return absl::InvalidArgumentError(absl::StrCat("DICOM TLS: cannot load the private key ", tls.key_file()));
  if (layer->setCertificateFile(tls.cert_file().c_str(), DCF_Filetype_PEM).bad())
    return absl::InvalidArgumentError(absl::StrCat("DICOM TLS: cannot load the certificate ", tls.cert_file()));
  if (!layer->checkPrivateKeyMatchesCertificate())
    return absl::InvalidArgumentError("DICOM TLS: the private key does not match the certificate");
  if (!tls.ca_file().empty() && layer->addTrustedCertificateFile(tls.ca_file().c_str(), DCF_Filetype_PEM).bad())
    return absl::InvalidArgumentError(absl::StrCat("DICOM TLS: cannot load the CA file ", tls.ca_file()));
  layer->setCertificateVerification(tls.ca_file().empty() ? DCV_ignoreCertificate : DCV_requireCertificate);
  return layer;
}

}  // namespace upp::gateway
