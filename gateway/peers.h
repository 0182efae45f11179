// Which peers may open an association with the gateway's listener: the
// calling AE title AND the address it connects from
// (listener.allowed_peers), or, without that list, the calling AE title
// alone (listener.allowed_calling_aes; empty: any). An AE title is no
// secret, so a title alone lets anyone who reaches the port store.
// Thread-safe (pure functions).
#ifndef UPP_GATEWAY_PEERS_H_
#define UPP_GATEWAY_PEERS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// An IPv4 or IPv6 network; IPv4 is held as an IPv4-mapped IPv6 address, so
// "10.0.0.0/8" also matches a peer that the socket reports as
// "::ffff:10.1.2.3".
struct Cidr {
  std::array<uint8_t, 16> address{};
  int prefix_bits = 0;  // of the 128
};

// "10.0.0.0/8", "10.1.2.3" (/32), "fd00::/8", "::1" (/128). nullopt when it
// is not one, or host bits are set below the prefix ("10.0.0.1/8": a typo
// more often than intent).
std::optional<Cidr> ParseCidr(const std::string& text);

enum class PeerDecision { kAllowed, kUnknownCallingAe, kAddressNotAllowed };

// `peer_ip` as the socket reports it ("10.1.2.3", "::1"); one that does not
// parse is not allowed.
PeerDecision DecidePeer(const unetrpp::v1::DicomListener& listener, const std::string& calling_ae,
                        const std::string& peer_ip);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_PEERS_H_
