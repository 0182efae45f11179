// Signals to the real unetrpp-serve binary. SIGTERM under load: the request
// in flight finishes, a new one gets UNAVAILABLE, health turns NOT_SERVING,
// and the process exits 0. SIGHUP: the configuration file is read again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "clients/cpp/client.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "preprocessing/plan.h"
#include "tests/server/test_volumes.h"

extern char** environ;

namespace upp::server {
namespace {

TEST(DrainTest, SigtermLetsInFlightWorkFinishAndExitsZero) {
  preprocessing::Plan plan = preprocessing::DefaultCtPlan(14, {32, 64, 64});
  plan.target_spacing = {2.0, 2.0, 2.0};
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/drain_plan.json") << plan.ToJson();
  const int port = testing::FreePort();
  std::ofstream(dir + "/drain.textproto")
      << "listen_address: '127.0.0.1:" << port
      << "'\nmetrics_address: 'off'\ndrain_grace_seconds: 60\nenable_reflection: true\n"
      << "models { name: 'small' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" << dir
      << "/drain_plan.json' }\n";

  const std::string config = dir + "/drain.textproto";
  const char* argv[] = {UPP_SERVE_BINARY, "--config", config.c_str(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, UPP_SERVE_BINARY, nullptr, nullptr, const_cast<char**>(argv), environ), 0);

  auto client = client::Client::Connect("127.0.0.1:" + std::to_string(port));
  bool healthy = false;
  for (int i = 0; i < 600 && !healthy; ++i) {
    healthy = client->Healthy().value_or(false);
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(healthy) << "the server did not become healthy";
  EXPECT_TRUE(client->Healthy("unetrpp.v1.Segmentation/small").value_or(false));

  {  // Server reflection lists the service.
    auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    auto stream = stub->ServerReflectionInfo(&context);
    grpc::reflection::v1alpha::ServerReflectionRequest request;
    request.set_list_services("");
    ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    grpc::reflection::v1alpha::ServerReflectionResponse response;
    ASSERT_TRUE(stream->Read(&response));
    bool listed = false;
    for (const auto& s : response.list_services_response().service()) listed |= s.name() == "unetrpp.v1.Segmentation";
    EXPECT_TRUE(listed) << response.DebugString();
    EXPECT_TRUE(stream->Finish().ok());
  }

  // ~64 windows: a few seconds of inference.
  const std::string input = testing::FloatNifti(testing::Phantom({128, 128, 90}, {2.0, 2.0, 2.0}));
  std::atomic<bool> inferring{false};
  absl::StatusOr<client::SegmentResult> in_flight = absl::UnknownError("not run");
  std::thread request([&] {
    client::SegmentOptions o;
    o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
    in_flight = client->Segment({input}, o, [&](const unetrpp::v1::Progress& p) {
      if (p.stage() == unetrpp::v1::STAGE_INFERENCE) inferring = true;
    });
  });
  for (int i = 0; i < 600 && !inferring; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(inferring.load());
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  auto refused = client->Segment({testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}))}, {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  auto health = client->Healthy();
  EXPECT_TRUE(!health.ok() || !*health) << "health should be NOT_SERVING while draining";

  request.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status();
  EXPECT_EQ(in_flight->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS].size(), 128u * 128 * 90 * 2);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// SIGHUP with a rewritten file: the new version serves without a restart;
// an invalid file leaves it serving and says why; a change that needs a
// restart is named in the log; SIGTERM still drains and exits 0.
TEST(SighupTest, RereadsTheConfigurationWhileServing) {
  preprocessing::Plan plan = preprocessing::DefaultCtPlan(14, {32, 64, 64});
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/sighup_plan.json") << plan.ToJson();
  const int port = testing::FreePort();
  const std::string config = dir + "/sighup.textproto", log = dir + "/sighup.log";
  const auto write_config = [&](const std::string& version, const std::string& extra) {
    std::ofstream(config) << "listen_address: '127.0.0.1:" << port << "'\nmetrics_address: 'off'\n"
                          << extra << "models { name: 'small' version: '" << version
                          << "' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" << dir
                          << "/sighup_plan.json' }\n";
  };
  const auto log_has = [&](const std::string& text) {
    for (int i = 0; i < 300; ++i) {
      std::stringstream s;
      s << std::ifstream(log).rdbuf();
      if (s.str().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  write_config("1", "");
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const char* argv[] = {UPP_SERVE_BINARY, "--config", config.c_str(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, UPP_SERVE_BINARY, &files, nullptr, const_cast<char**>(argv), environ), 0);
  posix_spawn_file_actions_destroy(&files);

  auto client = client::Client::Connect("127.0.0.1:" + std::to_string(port));
  const auto serving = [&]() -> std::string {
    auto m = client->GetModel("small");
    return m.ok() && m->ready() ? m->version() : "";
  };
  const auto wait_for_version = [&](const std::string& v) {
    for (int i = 0; i < 600 && serving() != v; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return serving() == v;
  };
  ASSERT_TRUE(wait_for_version("1")) << "the server did not start";

  write_config("2", "");
  ASSERT_EQ(kill(pid, SIGHUP), 0);
  EXPECT_TRUE(wait_for_version("2")) << "version 2 did not replace version 1";
  EXPECT_TRUE(log_has("model small version 1 unloaded"));
  auto result = client->Segment({testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}))}, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->header.model_version(), "2");

  std::ofstream(config) << "models { name: 'small' weights: \n";  // cut short, as by an editor's half-written save
  ASSERT_EQ(kill(pid, SIGHUP), 0);
  EXPECT_TRUE(log_has("configuration reload refused, the configuration in force is unchanged"));
  EXPECT_EQ(serving(), "2");
  EXPECT_TRUE(client->Healthy().value_or(false));

  write_config("2", "drain_grace_seconds: 61\n");
  ASSERT_EQ(kill(pid, SIGHUP), 0);
  EXPECT_TRUE(log_has("take effect only after a restart: drain_grace_seconds"));
  EXPECT_EQ(serving(), "2");

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace upp::server
