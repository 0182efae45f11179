// Whether a server speaks TLS, asked directly: a client configured for the
// wrong transport sees only gRPC's "Socket closed" (plaintext client, TLS
// server) or "Ssl handshake failed" (TLS client, plaintext server), which
// read like an outage and are retried. The client library asks this once a
// connection has failed, to say which flag is missing.
//
// gRPC offers no way to learn what the peer speaks, hence a TCP connection
// of our own and OpenSSL's handshake (already linked through gRPC).
#ifndef UPP_CLIENTS_CPP_TRANSPORT_PROBE_H_
#define UPP_CLIENTS_CPP_TRANSPORT_PROBE_H_

#include <optional>
#include <string>

#include "absl/time/time.h"

namespace upp::client {

enum class Transport { kTls, kNotTls };

// `target`: "host:port", "[v6]:port", "dns:///host:port" or
// "ipv4:a.b.c.d:port" (lists of addresses and other DNS servers are not
// probed). nullopt when nothing answers within `timeout` (name lookup
// aside, which has no timeout of its own), or the target is not one of
// those forms.
std::optional<Transport> ProbeTransport(const std::string& target, absl::Duration timeout);

}  // namespace upp::client

#endif  // UPP_CLIENTS_CPP_TRANSPORT_PROBE_H_
