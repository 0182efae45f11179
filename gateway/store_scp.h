// The gateway's C-STORE SCP (DCMTK dcmnet): accepts CT and MR image storage
// (and C-ECHO) from the configured peers (calling AE title and address:
// gateway/peers.h; others are rejected at association time), writes each instance
// straight to the spool as it arrives (DcmSCP::receiveSTORERequest to a
// file: never a series in memory), reads its header back (lengths checked
// first), and commits it to its series.
//
// One thread listens; each association runs on its own worker thread, at
// most listener.max_associations at once (more are rejected as "local limit
// exceeded", which senders retry). A peer silent for association_idle_seconds
// is dropped.
//
// Threading: Run() blocks the calling thread until Stop() (from any thread)
// and the associations in flight have ended. The spool and the counters it
// is given must outlive Run().
#ifndef UPP_GATEWAY_STORE_SCP_H_
#define UPP_GATEWAY_STORE_SCP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gateway/spool.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

class StoreScp {
 public:
  // Called for every C-STORE with "stored" or the reason it was refused
  // ("not_allowed", "too_large", "invalid", "spool_error").
  using InstanceCallback = std::function<void(const std::string& outcome)>;

  // Called for every association refused for who or where its peer is
  // ("calling_ae", "peer_address"), before any data arrives.
  using RejectCallback = std::function<void(const std::string& reason)>;

  StoreScp(const unetrpp::v1::DicomListener& config, Spool* spool, InstanceCallback on_instance,
           RejectCallback on_rejected = nullptr);
  ~StoreScp();

  // Listens on config.port until Stop(). Returns when the TLS files cannot
  // be loaded or the listening socket opened, or after Stop() and the last
  // association.
  absl::Status Run();
  void Stop();
  // The configured port.
  int port() const;

 private:
  class Pool;
  std::unique_ptr<Pool> pool_;
  const unetrpp::v1::DicomTls tls_;
  std::shared_ptr<void> tls_layer_;  // DcmTLSTransportLayer while listening with TLS (DCMTK type kept out of here)
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_STORE_SCP_H_
