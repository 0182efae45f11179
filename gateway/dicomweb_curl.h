// What the gateway's two DICOMweb clients share (gateway/stow_client.h:
// results out by STOW-RS; gateway/wado_client.h: pulls in by WADO-RS): a
// libcurl handle set up for one call to a configured service. Only http and
// https, no redirects (a credential is never replayed elsewhere), TLS 1.2+
// with the peer's certificate and name always verified (the system's CAs,
// or ca_file), the bearer token or basic-auth pair read from its file at
// each call (a rotated credential is picked up), connect timeout
// timeout_seconds. The caller sets the method, body, callbacks and the
// transfer's timeout.
//
// Thread-compatible: one call per object.
#ifndef UPP_GATEWAY_DICOMWEB_CURL_H_
#define UPP_GATEWAY_DICOMWEB_CURL_H_

#include <curl/curl.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

class DicomWebCall {
 public:
  // `field`: the service's configuration field, for errors
  // ("destination.dicomweb", "dicomweb.sources[2].service"). `path` is
  // appended to the service's url ("/studies"). UNAVAILABLE when a
  // credential file cannot be read (it may appear: retried),
  // FAILED_PRECONDITION when it holds what cannot be sent.
  static absl::StatusOr<std::unique_ptr<DicomWebCall>> Create(const unetrpp::v1::DicomWebDestination& service,
                                                              const std::string& field, const std::string& path,
                                                              const std::vector<std::string>& headers);
  ~DicomWebCall();

  CURL* handle() const { return curl_.get(); }
  // curl_easy_perform, then the HTTP status (0 when none came).
  CURLcode Perform(long& http_status);

 private:
  struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
  };
  struct ListDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
  };
  DicomWebCall() = default;

  std::unique_ptr<CURL, CurlDeleter> curl_;
  std::unique_ptr<curl_slist, ListDeleter> headers_;
  std::string url_, userpwd_;  // libcurl keeps pointers to them
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_DICOMWEB_CURL_H_
