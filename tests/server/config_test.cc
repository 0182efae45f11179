// The configuration: parsing, defaults, validation with field names
// (server/config.h).
#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/cpu_features.h"

namespace upp::server {
namespace {

TEST(ConfigTest, ErrorsNameTheField) {
  auto bad = ParseConfig("listen_adress: 'x'");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("listen_adress"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("line 1"), std::string::npos);
  auto c = ParseConfig("models { name: 'a' weights: 'w' devices: 'gpu0' }");
  ASSERT_TRUE(c.ok());
  ApplyDefaults(*c);
  auto s = ValidateConfig(*c);
  EXPECT_NE(s.message().find("models[0].devices[0]"), std::string::npos) << s;
  c = ParseConfig("models { name: 'a' weights: 'w' } models { name: 'a' weights: 'v' }");
  ApplyDefaults(*c);
  EXPECT_NE(ValidateConfig(*c).message().find("models[1].name"), std::string::npos);
  c = ParseConfig("default_model: 'b' models { name: 'a' weights: 'w' }");
  ApplyDefaults(*c);
  EXPECT_NE(ValidateConfig(*c).message().find("default_model"), std::string::npos);
  c = ParseConfig("");
  ApplyDefaults(*c);
  EXPECT_NE(ValidateConfig(*c).message().find("models"), std::string::npos);
}

// Anonymous callers are served by default only where no credential source
// is configured and nobody beyond this machine can connect; a server that
// listens elsewhere says so itself or refuses to start.
TEST(ConfigTest, AnonymousCallersAreAnExplicitChoiceBeyondLoopback) {
  const auto checked = [](const std::string& text) {
    auto c = ParseConfig(text + " models { name: 'a' weights: 'w' }");
    EXPECT_TRUE(c.ok()) << c.status();
    ApplyDefaults(*c);
    return std::make_pair(*c, ValidateConfig(*c));
  };
  auto [loopback, ok] = checked("");
  EXPECT_EQ(loopback.listen_address(), "127.0.0.1:50051");
  EXPECT_TRUE(loopback.auth().allow_anonymous());
  EXPECT_TRUE(ok.ok()) << ok;

  auto [open, refused] = checked("listen_address: '0.0.0.0:50051'");
  EXPECT_FALSE(open.auth().allow_anonymous());
  EXPECT_NE(refused.message().find("allow_anonymous: true"), std::string::npos) << refused;
  EXPECT_NE(refused.message().find("nobody could call"), std::string::npos) << refused;
  EXPECT_TRUE(checked("listen_address: '[::]:50051' auth { allow_anonymous: true }").second.ok());

  auto [keys, with_keys] = checked("listen_address: '127.0.0.1:1' auth { api_keys_file: 'k' }");
  EXPECT_FALSE(keys.auth().allow_anonymous());  // credentials configured: none without them
  EXPECT_TRUE(with_keys.ok()) << with_keys;
  EXPECT_NE(checked("auth { required: true allow_anonymous: true api_keys_file: 'k' }")
                .second.message()
                .find("contradicts auth.required"),
            std::string::npos);
  EXPECT_NE(checked("auth { on_unreadable_key_file: 'ignore' }").second.message().find("on_unreadable_key_file"),
            std::string::npos);
}

// What ships passes that rule as its comments say: the demos opt in, the
// cluster's configuration authenticates.
TEST(ConfigTest, ShippedConfigurationsSayWhoMayCall) {
  for (const auto& [file, anonymous] : {std::pair<const char*, bool>{"deploy/server.textproto", true},
                                        {"deploy/docker/server.textproto", true},
                                        {"deploy/k8s/base/server.textproto", false},
                                        {"deploy/k8s/overlays/models-volume/server.textproto", false}}) {
    std::ifstream in(std::string(UPP_SOURCE_DIR) + "/" + file);
    std::stringstream text;
    text << in.rdbuf();
    auto c = ParseConfig(text.str());
    ASSERT_TRUE(c.ok()) << file << ": " << c.status();
    EXPECT_FALSE(IsLoopback(c->listen_address())) << file;
    ApplyDefaults(*c);
    EXPECT_TRUE(ValidateConfig(*c).ok()) << file << ": " << ValidateConfig(*c);
    EXPECT_EQ(c->auth().allow_anonymous(), anonymous) << file;
  }
}

// precision "bf16" on a CPU that cannot run it is refused at configuration
// time, naming the field, the ISA and the alternative (ctest also runs this
// under ONEDNN_MAX_CPU_ISA=AVX2, as on an AVX2-only EPYC).
TEST(ConfigTest, Bf16IsRefusedWhereTheCpuCannotRunIt) {
  auto c = ParseConfig("models { name: 'a' weights: 'w' precision: 'bf16' }");
  ASSERT_TRUE(c.ok());
  ApplyDefaults(*c);
  const auto s = ValidateConfig(*c);
  const auto& cpu = model::DetectCpuFeatures();
  EXPECT_EQ(s.ok(), cpu.bf16_convolutions) << s;
  if (!s.ok()) {
    EXPECT_NE(s.message().find("models[0].precision"), std::string::npos) << s;
    EXPECT_NE(s.message().find(cpu.isa), std::string::npos) << s;
    EXPECT_NE(s.message().find("\"fp32\""), std::string::npos) << s;
  }
  c = ParseConfig("models { name: 'a' weights: 'w' precision: 'bf16' devices: 'cuda:0' }");
  ApplyDefaults(*c);
  EXPECT_TRUE(ValidateConfig(*c).ok());  // GPUs run bfloat16 regardless of the CPU
}

TEST(ConfigTest, JobDeviceDefaultsToTheCpuAndIsOneNamePerGpu) {
  auto c = ParseConfig(
      "models { name: 'a' weights: 'w' devices: 'cuda:1' } models { name: 'b' weights: 'w' "
      "job_device: 'cuda' }");
  ASSERT_TRUE(c.ok());
  ApplyDefaults(*c);
  ASSERT_TRUE(ValidateConfig(*c).ok());
  EXPECT_EQ(c->models(0).job_device(), "cpu");              // not the model's GPU unless asked
  EXPECT_EQ(c->models(1).job_device(), "cuda:0");           // its memory budget is kept under one name
  EXPECT_EQ(c->limits().max_device_bytes_in_flight(), 0u);  // the server sets it from the device (NVML)
  c = ParseConfig("models { name: 'a' weights: 'w' } models { name: 'b' weights: 'w' job_device: 'gpu1' }");
  ApplyDefaults(*c);
  const auto s = ValidateConfig(*c);
  EXPECT_NE(s.message().find("models[1].job_device"), std::string::npos) << s;
}

// `text` parsed, its deprecated fields moved (the warnings), then defaulted.
std::vector<std::string> Migrated(const std::string& text, unetrpp::v1::ServerConfig* out) {
  auto c = ParseConfig(text + " models { name: 'a' weights: 'w' }");
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  std::vector<std::string> warnings = MigrateDeprecatedFields(*c);
  EXPECT_TRUE(MigrateDeprecatedFields(*c).empty());  // moved once: one warning per start
  ApplyDefaults(*c);
  EXPECT_TRUE(ValidateConfig(*c).ok());
  *out = *std::move(c);
  return warnings;
}

// Renamed fields keep working: each old one moves to its new place with a
// warning; where both are set the new one wins. The rest of the server reads
// only the new places.
TEST(ConfigTest, DeprecatedFieldsMoveToTheirNewPlaces) {
  unetrpp::v1::ServerConfig c;
  const std::vector<std::string> warnings = Migrated(
      "timeouts { priority_aging_seconds: 5 } limits { max_requests_per_peer: 3 } "
      "auth { max_requests_per_principal: 2 max_bytes_per_principal: 1000 max_windows_per_principal: 7 }",
      &c);
  ASSERT_EQ(warnings.size(), 5u);
  EXPECT_NE(warnings[0].find("timeouts.priority_aging_seconds is deprecated; write batching.priority_aging_seconds"),
            std::string::npos)
      << warnings[0];
  EXPECT_EQ(c.batching().priority_aging_seconds(), 5);
  EXPECT_EQ(c.limits().per_caller().max_requests_per_peer(), 3u);
  EXPECT_EQ(c.limits().per_caller().max_requests_per_principal(), 2u);
  EXPECT_EQ(c.limits().per_caller().max_bytes(), 1000u);
  EXPECT_EQ(c.limits().per_caller().max_windows(), 7u);
}

TEST(ConfigTest, WhereOldAndNewAreBothSetTheNewOneWins) {
  constexpr char kBothSet[] =
      "timeouts { priority_aging_seconds: 5 } batching { priority_aging_seconds: 9 } "
      "auth { max_bytes_per_principal: 1000 } limits { per_caller { max_bytes: 2000 } }";
  unetrpp::v1::ServerConfig c;
  const std::vector<std::string> both = Migrated(kBothSet, &c);
  ASSERT_EQ(both.size(), 2u);
  for (const std::string& w : both) EXPECT_NE(w.find("is set too and wins"), std::string::npos) << w;
  // The new values stayed (aging, bytes).
  EXPECT_EQ(std::make_pair(c.batching().priority_aging_seconds(), c.limits().per_caller().max_bytes()),
            std::make_pair(9.0, uint64_t{2000}));
  EXPECT_EQ(c.limits().per_caller().max_requests_per_peer(), 16u);  // the default, in its new place
}

// No one caller takes the whole server by default: half its memory and
// half its window queue; and what resampling may make of an input is bound.
TEST(ConfigTest, OneCallerGetsAFairShareByDefault) {
  auto parsed = ParseConfig("models { name: 'a' weights: 'w' }");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  unetrpp::v1::ServerConfig& c = *parsed;
  ApplyDefaults(c);
  ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c);
  EXPECT_EQ(c.limits().per_caller().max_bytes(), c.limits().max_bytes_in_flight() / 2);
  EXPECT_EQ(c.limits().per_caller().max_windows(), c.limits().max_queued_windows() / 2);
  EXPECT_GT(c.limits().per_caller().max_bytes(), 0u);
  EXPECT_GT(c.limits().max_spacing_mm(), 0);
  EXPECT_GE(c.limits().max_resampling_factor(), 1);
  c.mutable_limits()->set_max_resampling_factor(0.5);
  EXPECT_NE(ValidateConfig(c).message().find("limits.max_resampling_factor"), std::string::npos);
}

TEST(ConfigTest, AgingMustNotBeNegative) {
  auto c = ParseConfig("batching { priority_aging_seconds: -1 } models { name: 'a' weights: 'w' }");
  ApplyDefaults(*c);
  EXPECT_NE(ValidateConfig(*c).message().find("batching.priority_aging_seconds"), std::string::npos);
}

}  // namespace
}  // namespace upp::server
