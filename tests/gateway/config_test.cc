#include "gateway/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "proto/text_config.h"

namespace upp::gateway {
namespace {

constexpr char kMinimal[] = R"(
  spool_dir: "/var/spool/unetrpp"
  service { target: "unetrpp:50051" }
  destination { host: "pacs" port: 104 ae_title: "PACS" }
  rules { name: "ct" modalities: "CT" })";

absl::Status Check(const std::string& extra) {
  unetrpp::v1::GatewayConfig c;
  if (auto s = proto::ParseTextConfig(std::string(kMinimal) + extra, c); !s.ok()) return s;
  ApplyDefaults(c);
  return Validate(c);
}

TEST(GatewayConfigTest, DefaultsAreFilledIn) {
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(proto::ParseTextConfig(kMinimal, c).ok());
  ApplyDefaults(c);
  ASSERT_TRUE(Validate(c).ok()) << Validate(c);
  EXPECT_EQ(c.listener().ae_title(), "UNETRPP");
  EXPECT_EQ(c.listener().port(), 11112u);
  EXPECT_EQ(c.destination().calling_ae_title(), "UNETRPP");
  EXPECT_EQ(c.unmatched(), "drop");
  EXPECT_EQ(c.max_attempts(), 5u);
  EXPECT_EQ(c.retention().max_age_seconds(), 7 * 24 * 3600);
  EXPECT_EQ(c.retention().max_bytes(), uint64_t{10} << 30);
  EXPECT_EQ(c.max_interrupted_attempts(), 2u);
  EXPECT_TRUE(c.rules(0).send_seg());
  EXPECT_TRUE(c.rules(0).send_report());
  // Tracing off (no endpoint); when on, the gateway is its own service.
  EXPECT_EQ(c.tracing().endpoint(), "");
  EXPECT_EQ(c.tracing().service_name(), "unetrpp-dicom-gateway");
}

TEST(GatewayConfigTest, ErrorsNameTheField) {
  auto expect = [](const std::string& extra, const std::string& field) {
    const auto s = Check(extra);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << extra;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  };
  expect(R"(listener { ae_title: "A\\B" })", "listener.ae_title");
  expect(R"(listener { ae_title: "SEVENTEEN_CHARS_X" })", "listener.ae_title");
  expect(R"(listener { allowed_calling_aes: "" })", "listener.allowed_calling_aes[0]");
  expect(R"(listener { max_pdu_bytes: 100 })", "listener.max_pdu_bytes");
  expect(R"(listener { max_association_seconds: -1 })", "listener.max_association_seconds");
  expect(R"(listener { max_instance_bytes: 5000000000 })", "listener.max_instance_bytes");
  expect(R"(listener { min_free_spool_bytes: 18446744073709551615 })", "listener.min_free_spool_bytes");
  expect(R"(unmatched: "archive")", "unmatched");
  expect(R"(tracing { sampling_ratio: 1.5 })", "tracing");
  expect(R"(tracing { schedule_delay_seconds: -1 })", "tracing");
  expect(R"(rules { name: "x" orientations: "diagonal" })", "rules[1].orientations[0]");
  expect(R"(rules { name: "x" mode: "quick" })", "rules[1].mode");
  expect(R"(rules { name: "x" labels: "liver" labels: "" })", "rules[1].labels[1]");
  expect(R"(quiet_period_seconds: -1)", "quiet_period_seconds");
  expect(R"(no_such_field: 1)", "line");
  expect(R"(listener { tls { cert_file: "c.pem" } })", "listener.tls");
  expect(R"(listener { allowed_peers { ae_title: "PACS" } })", "listener.allowed_peers[0].cidrs");
  expect(R"(listener { allowed_peers { ae_title: "PACS" cidrs: "10.0.0.1/8" } })",
         "listener.allowed_peers[0].cidrs[0]");
  expect(R"(listener { allowed_peers { ae_title: "" cidrs: "10.0.0.0/8" } })", "listener.allowed_peers[0].ae_title");
  expect(R"(listener { allowed_calling_aes: "PACS" allowed_peers { ae_title: "PACS" cidrs: "10.0.0.0/8" } })",
         "listener.allowed_peers");
  expect(R"(retention { max_age_seconds: -1 })", "retention.max_age_seconds");
  expect(R"(max_interrupted_attempts: 1000)", "max_interrupted_attempts");
}

// Pull sources: named for POST /pull, checked as the STOW-RS destination
// is; the receiver's queue bound has a default and a ceiling.
TEST(GatewayConfigTest, DicomWebSourcesAndTheConnectionQueue) {
  constexpr char kWeb[] = R"( dicomweb { port: 8443 auth { allow_anonymous: true } )";
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(
      proto::ParseTextConfig(
          std::string(kMinimal) + kWeb + R"(sources { name: "pacs" service { url: "https://pacs/dicom-web" } } })", c)
          .ok());
  ApplyDefaults(c);
  ASSERT_TRUE(Validate(c).ok()) << Validate(c);
  EXPECT_EQ(c.dicomweb().max_queued_connections(), 16u);
  EXPECT_EQ(c.dicomweb().sources(0).service().timeout_seconds(), 60);
  auto expect = [&](const std::string& extra, const std::string& field) {
    const auto s = Check(kWeb + extra + "}");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << extra;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  };
  expect(R"(max_queued_connections: 5000)", "dicomweb.max_queued_connections");
  expect(R"(sources { service { url: "https://pacs" } })", "dicomweb.sources[0].name");
  expect(R"(sources { name: "a b" service { url: "https://pacs" } })", "dicomweb.sources[0].name");
  expect(R"(sources { name: "a" service { url: "https://pacs" } } sources { name: "a" service { url: "https://x" } })",
         "dicomweb.sources[1].name");
  expect(R"(sources { name: "a" service { url: "http://pacs.example/dicom-web" } })",
         "dicomweb.sources[0].service.url");
  expect(R"(sources { name: "a" service { url: "https://pacs" token_file: "t" basic_auth_file: "b" } })",
         "dicomweb.sources[0].service");
  EXPECT_TRUE(
      Check(std::string(kWeb) + R"(sources { name: "local" service { url: "http://127.0.0.1:8042" } } })").ok());
  // A name is also a file's in <spool_dir>/polled/: "." and ".." would be
  // the directory or the spool itself; dots only are refused, dots within
  // are fine.
  for (const char* dots : {".", "..", "..."})
    expect(absl::StrCat(R"(sources { name: ")", dots, R"(" service { url: "https://pacs" } })"),
           "dicomweb.sources[0].name");
  EXPECT_TRUE(Check(std::string(kWeb) + R"(sources { name: "pacs.main" service { url: "https://pacs" } } })").ok());
}

// The poll's settle time defaults to the quiet period, its attempts to 5;
// both are bounded.
TEST(GatewayConfigTest, APollsSettleTimeAndAttempts) {
  constexpr char kPoll[] =
      R"( quiet_period_seconds: 7 dicomweb { port: 8443 auth { allow_anonymous: true } )"
      R"(sources { name: "pacs" service { url: "https://pacs/dicom-web" } poll { interval_seconds: 60 )";
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(proto::ParseTextConfig(std::string(kMinimal) + kPoll + "} } }", c).ok());
  ApplyDefaults(c);
  ASSERT_TRUE(Validate(c).ok()) << Validate(c);
  EXPECT_EQ(c.dicomweb().sources(0).poll().settle_seconds(), 7);
  EXPECT_EQ(c.dicomweb().sources(0).poll().max_attempts(), 5u);
  for (const char* bad : {"settle_seconds: -1", "settle_seconds: 100000", "max_attempts: 101"}) {
    const auto s = Check(std::string(kPoll) + bad + "} } }");
    EXPECT_NE(s.message().find("dicomweb.sources[0].poll."), std::string::npos) << bad << ": " << s;
  }
}

TEST(GatewayConfigTest, TlsToTheDestinationVerifiesIt) {
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(proto::ParseTextConfig(kMinimal, c).ok());
  c.mutable_destination()->mutable_tls()->set_cert_file("g.crt");
  c.mutable_destination()->mutable_tls()->set_key_file("g.key");
  ApplyDefaults(c);
  EXPECT_NE(Validate(c).message().find("destination.tls.ca_file"), std::string::npos) << Validate(c);
  c.mutable_destination()->mutable_tls()->set_ca_file("ca.crt");
  EXPECT_TRUE(Validate(c).ok());
}

TEST(GatewayConfigTest, MutualTlsToTheServiceNeedsItsCa) {
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(proto::ParseTextConfig(kMinimal, c).ok());
  c.mutable_service()->set_tls_cert_file("client.pem");
  ApplyDefaults(c);
  EXPECT_NE(Validate(c).message().find("service.tls_cert_file"), std::string::npos) << Validate(c);
  c.mutable_service()->set_tls_ca_file("ca.pem");
  EXPECT_TRUE(Validate(c).ok());
}

// A CA that make-dev-certs.sh has not written yet is found by
// --check-config, not by the first series that fails on it.
TEST(GatewayConfigTest, FilesItNamesMustBeReadable) {
  unetrpp::v1::GatewayConfig c;
  ASSERT_TRUE(proto::ParseTextConfig(kMinimal, c).ok());
  ApplyDefaults(c);
  c.mutable_service()->set_tls_ca_file("/nonexistent/ca.pem");
  c.mutable_service()->set_token_file("/nonexistent/token");
  ASSERT_TRUE(Validate(c).ok());
  const absl::Status s = CheckFilesReadable(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("service.tls_ca_file \"/nonexistent/ca.pem\""), std::string::npos) << s;
  EXPECT_NE(s.message().find("service.token_file"), std::string::npos) << s;
  const std::string ca = ::testing::TempDir() + "/gateway_config_test_ca.pem";
  std::ofstream(ca) << "a CA";
  c.mutable_service()->set_tls_ca_file(ca);
  c.mutable_service()->clear_token_file();
  EXPECT_TRUE(CheckFilesReadable(c).ok());
  std::remove(ca.c_str());
}

}  // namespace
}  // namespace upp::gateway
