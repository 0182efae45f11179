// What a configuration reload changes live and what waits for a restart
// (server/config_reload.h).
#include "server/config_reload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "server/config.h"

namespace upp::server {
namespace {

using Fields = std::vector<std::string>;

// ConfigDifferences' order (sorted).
Fields Sorted(Fields fields) {
  std::sort(fields.begin(), fields.end());
  return fields;
}

unetrpp::v1::ServerConfig Config(const std::string& text) {
  auto c = ParseConfig(text);
  EXPECT_TRUE(c.ok()) << c.status();
  ApplyDefaults(*c);
  EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c);
  return *c;
}

constexpr char kBase[] =
    "listen_address: '127.0.0.1:50051'\n"
    "limits { max_concurrent_requests: 8 decode_threads: 1 }\n"
    "models { name: 'ct' weights: 'a.safetensors' version: '1' }\n"
    "models { name: 'mr' repository: '/models' modality: 'MR' version_policy { latest: 1 } }\n";

TEST(ConfigReloadTest, TheSameFileChangesNothing) {
  const ReloadPlan plan = PlanReload(Config(kBase), Config(kBase));
  EXPECT_EQ(plan.live, Fields{});
  EXPECT_EQ(plan.restart_only, Fields{});
}

TEST(ConfigReloadTest, VersionsPoliciesAndLimitsChangeLive) {
  const auto next = Config(
      "listen_address: '127.0.0.1:50051'\n"
      "limits { max_concurrent_requests: 3 decode_threads: 1 max_voxels: 1000 }\n"
      "timeouts { header_seconds: 4 }\n"
      "default_model: 'mr'\n"
      "models { name: 'ct' weights: 'b.safetensors' version: '2' }\n"
      "models { name: 'mr' repository: '/models' modality: 'MR' version_policy { specific: '5' } }\n");
  const ReloadPlan plan = PlanReload(Config(kBase), next);
  EXPECT_EQ(plan.restart_only, Fields{});
  EXPECT_EQ(plan.live,
            Sorted({"default_model", "limits.max_concurrent_requests", "limits.max_voxels", "models[\"ct\"].version",
                    "models[\"ct\"].weights", "models[\"mr\"].version_policy.latest",
                    "models[\"mr\"].version_policy.specific", "timeouts.header_seconds"}));
  EXPECT_EQ(plan.configured.SerializeAsString(), next.SerializeAsString()) << "everything of it is in force";
}

TEST(ConfigReloadTest, WhatNeedsARestartIsNamedAndLeftAsItWas) {
  const auto next = Config(
      "listen_address: '127.0.0.1:50052'\n"
      "cpu_threads: 7\n"
      "tls { cert_file: 'c.pem' key_file: 'k.pem' }\n"
      "limits { max_concurrent_requests: 3 decode_threads: 4 }\n"
      "models { name: 'ct' weights: 'a.safetensors' version: '1' devices: 'cpu' instances_per_device: 2 }\n"
      "models { name: 'mr' repository: '/models' modality: 'MR' version_policy { latest: 1 } }\n"
      "models { name: 'new' weights: 'n.safetensors' }\n");
  const auto running = Config(kBase);
  const ReloadPlan plan = PlanReload(running, next);
  EXPECT_EQ(plan.live, Sorted({"limits.max_concurrent_requests"}));
  EXPECT_EQ(plan.restart_only,
            Sorted({"cpu_threads", "limits.decode_threads", "listen_address", "models[\"ct\"].instances_per_device",
                    "models[\"new\"]", "tls.cert_file", "tls.key_file"}));
  EXPECT_EQ(plan.configured.listen_address(), running.listen_address());
  EXPECT_EQ(plan.configured.limits().decode_threads(), running.limits().decode_threads());
  EXPECT_EQ(plan.configured.limits().max_concurrent_requests(), 3u);
  ASSERT_EQ(plan.configured.models_size(), 2) << "a model added waits for a restart";
  EXPECT_EQ(plan.configured.models(0).instances_per_device(), running.models(0).instances_per_device());
}

TEST(ConfigReloadTest, AModelRemovedOrADefaultNotServedWaitsForARestart) {
  const auto next = Config(
      "listen_address: '127.0.0.1:50051'\n"
      "default_model: 'other'\n"
      "limits { max_concurrent_requests: 8 decode_threads: 1 }\n"
      "models { name: 'other' weights: 'o.safetensors' }\n"
      "models { name: 'ct' weights: 'a.safetensors' version: '1' }\n");
  const auto running = Config(kBase);
  const ReloadPlan plan = PlanReload(running, next);
  EXPECT_EQ(plan.live, Fields{});
  EXPECT_EQ(plan.restart_only, Sorted({"default_model", "models[\"mr\"]", "models[\"other\"]"}));
  EXPECT_EQ(plan.configured.default_model(), running.default_model());
  EXPECT_EQ(plan.configured.models_size(), 2);
}

TEST(ConfigReloadTest, LiveConfigKeepsWhatStartUpDerived) {
  // max_device_bytes_in_flight is derived from the GPU at start: a file
  // without it does not clear the running value.
  auto running = Config(kBase);
  running.mutable_limits()->set_max_device_bytes_in_flight(123);
  const auto live = LiveConfig(running, Config(kBase));
  EXPECT_EQ(live.limits().max_device_bytes_in_flight(), 123u);
}

}  // namespace
}  // namespace upp::server
