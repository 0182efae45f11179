// Which peers may associate: calling AE title and source address together.
#include "gateway/peers.h"

#include <gtest/gtest.h>

namespace upp::gateway {
namespace {

unetrpp::v1::DicomListener Listener() {
  unetrpp::v1::DicomListener l;
  auto* pacs = l.add_allowed_peers();
  pacs->set_ae_title("PACS");
  pacs->add_cidrs("10.20.0.0/16");
  pacs->add_cidrs("fd00::/8");
  auto* modality = l.add_allowed_peers();
  modality->set_ae_title("CT1");
  modality->add_cidrs("192.168.1.7");
  return l;
}

TEST(PeersTest, BothTheCallingAeAndItsAddressMustBeListedTogether) {
  const auto l = Listener();
  EXPECT_EQ(DecidePeer(l, "PACS", "10.20.3.4"), PeerDecision::kAllowed);
  EXPECT_EQ(DecidePeer(l, "PACS  ", "::ffff:10.20.3.4"), PeerDecision::kAllowed);  // padded AE, mapped IPv4
  EXPECT_EQ(DecidePeer(l, "PACS", "fd12::1"), PeerDecision::kAllowed);
  EXPECT_EQ(DecidePeer(l, "CT1", "192.168.1.7"), PeerDecision::kAllowed);
  // A listed title from another's network, or from anywhere else.
  EXPECT_EQ(DecidePeer(l, "CT1", "10.20.3.4"), PeerDecision::kAddressNotAllowed);
  EXPECT_EQ(DecidePeer(l, "PACS", "10.21.0.1"), PeerDecision::kAddressNotAllowed);
  EXPECT_EQ(DecidePeer(l, "PACS", "not an address"), PeerDecision::kAddressNotAllowed);
  EXPECT_EQ(DecidePeer(l, "pacs", "10.20.3.4"), PeerDecision::kUnknownCallingAe);  // AE titles are case-sensitive
  EXPECT_EQ(DecidePeer(l, "STRANGER", "10.20.3.4"), PeerDecision::kUnknownCallingAe);
}

TEST(PeersTest, WithoutPeersTheCallingAeListDecidesAndEmptyAdmitsAny) {
  unetrpp::v1::DicomListener l;
  EXPECT_EQ(DecidePeer(l, "ANY", "203.0.113.9"), PeerDecision::kAllowed);
  l.add_allowed_calling_aes("PACS");
  EXPECT_EQ(DecidePeer(l, "PACS", "203.0.113.9"), PeerDecision::kAllowed);
  EXPECT_EQ(DecidePeer(l, "ANY", "203.0.113.9"), PeerDecision::kUnknownCallingAe);
}

TEST(PeersTest, NetworksParseStrictly) {
  EXPECT_TRUE(ParseCidr("10.0.0.0/8"));
  EXPECT_TRUE(ParseCidr("0.0.0.0/0"));
  EXPECT_TRUE(ParseCidr("10.1.2.3"));
  EXPECT_TRUE(ParseCidr("::1"));
  EXPECT_EQ(ParseCidr("10.1.2.3")->prefix_bits, 128);
  EXPECT_FALSE(ParseCidr("10.0.0.1/8"));  // host bits set
  EXPECT_FALSE(ParseCidr("10.0.0.0/33"));
  EXPECT_FALSE(ParseCidr("10.0.0.0/+8"));
  EXPECT_FALSE(ParseCidr("10.0.0.0/"));
  EXPECT_FALSE(ParseCidr("pacs.example"));
  EXPECT_FALSE(ParseCidr(""));
}

}  // namespace
}  // namespace upp::gateway
