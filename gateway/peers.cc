#include "gateway/peers.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"

namespace upp::gateway {
namespace {

std::optional<std::array<uint8_t, 16>> ParseAddress(const std::string& text, int& bits) {
  std::array<uint8_t, 16> a{};
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    a[10] = a[11] = 0xff;  // ::ffff:a.b.c.d
    std::copy_n(reinterpret_cast<const uint8_t*>(&v4.s_addr), 4, a.begin() + 12);
    bits = 32;
    return a;
  }
  if (inet_pton(AF_INET6, text.c_str(), a.data()) == 1) {
    bits = 128;
    return a;
  }
  return std::nullopt;
}

bool Contains(const Cidr& cidr, const std::array<uint8_t, 16>& address) {
  for (int bit = 0; bit < cidr.prefix_bits; ++bit) {
    const uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    if ((cidr.address[bit / 8] & mask) != (address[bit / 8] & mask)) return false;
  }
  return true;
}

bool InAny(const google::protobuf::RepeatedPtrField<std::string>& cidrs, const std::array<uint8_t, 16>& address) {
  return std::any_of(cidrs.begin(), cidrs.end(), [&](const std::string& text) {
    const auto cidr = ParseCidr(text);
    return cidr && Contains(*cidr, address);
  });
}

}  // namespace

std::optional<Cidr> ParseCidr(const std::string& text) {
  const size_t slash = text.find('/');
  int family_bits = 0;
  const auto address = ParseAddress(text.substr(0, slash), family_bits);
  if (!address) return std::nullopt;
  int bits = family_bits;
  if (slash != std::string::npos &&
      (!absl::SimpleAtoi(text.substr(slash + 1), &bits) || bits < 0 || bits > family_bits ||
       text.substr(slash + 1).find_first_not_of("0123456789") != std::string::npos))
    return std::nullopt;
  Cidr cidr{*address, bits + (128 - family_bits)};
  Cidr host_bits_clear = cidr;
  for (int bit = cidr.prefix_bits; bit < 128; ++bit)
    host_bits_clear.address[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  if (host_bits_clear.address != cidr.address) return std::nullopt;
  return cidr;
}

PeerDecision DecidePeer(const unetrpp::v1::DicomListener& listener, const std::string& calling_ae,
                        const std::string& peer_ip) {
  const std::string ae(absl::StripAsciiWhitespace(calling_ae));
  if (listener.allowed_peers().empty()) {
    const auto& aes = listener.allowed_calling_aes();
    return aes.empty() || std::find(aes.begin(), aes.end(), ae) != aes.end() ? PeerDecision::kAllowed
                                                                             : PeerDecision::kUnknownCallingAe;
  }
  int bits = 0;
  const auto address = ParseAddress(peer_ip, bits);
  bool ae_known = false;
  for (const auto& peer : listener.allowed_peers()) {
    if (peer.ae_title() != ae) continue;
    ae_known = true;
    if (address && InAny(peer.cidrs(), *address)) return PeerDecision::kAllowed;
  }
  return ae_known ? PeerDecision::kAddressNotAllowed : PeerDecision::kUnknownCallingAe;
}

}  // namespace upp::gateway
