// Configuration precedence: defaults < the file < explicit flags, and the
// default model only when nothing names one.
#include "server/command_line.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/testing/temp_path.h"

namespace upp::server {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = upp::testing::UniqueTempPath(name);
  std::ofstream(path) << text;
  return path;
}

class CommandLineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = WriteFile("cl_weights.safetensors", "not read here");
    file_ = WriteFile("cl_server.textproto",
                      "listen_address: \"127.0.0.1:7001\"\n"
                      "logging { level: \"warn\" }\n"
                      "models { name: \"m\" weights: \"" +
                          weights_ + "\" }\n");
  }
  std::string weights_, file_;
};

TEST_F(CommandLineTest, TheFileOverridesDefaults) {
  CommandLine flags;
  flags.config_path = file_;
  auto config = AssembleConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address(), "127.0.0.1:7001");   // from the file
  EXPECT_EQ(config->metrics_address(), "127.0.0.1:9464");  // default: the file is silent
  EXPECT_EQ(config->logging().level(), "warn");
  ASSERT_EQ(config->models_size(), 1);
  EXPECT_EQ(config->models(0).name(), "m");
}

TEST_F(CommandLineTest, ExplicitFlagsOverrideTheFile) {
  CommandLine flags;
  flags.config_path = file_;
  flags.listen = "127.0.0.1:7002";
  flags.log_level = "debug";
  auto config = AssembleConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address(), "127.0.0.1:7002");
  EXPECT_EQ(config->logging().level(), "debug");
  EXPECT_EQ(config->metrics_address(), "127.0.0.1:9464");
}

// The default model's coarse companion serves `fastest` (and locates label
// subsets) when it lies beside the default model's weights, else nothing.
TEST_F(CommandLineTest, TheDefaultModelsCoarseCompanionServesFastestWhenBesideIt) {
  const std::filesystem::path dir = upp::testing::UniqueTempPath("cl_models");
  std::filesystem::create_directories(dir);
  const std::string weights = (dir / "phantom_ct_v1.safetensors").string();
  std::ofstream(weights) << "not read here";
  auto config = AssembleConfig(CommandLine(), {weights});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models_size(), 1);
  EXPECT_EQ(config->models(0).speed().fastest_model(), "");
  std::ofstream(dir / kDefaultCoarseModelFile) << "not read here";
  config = AssembleConfig(CommandLine(), {weights});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models_size(), 2);
  EXPECT_EQ(config->models(1).name(), "phantom-ct-coarse");
  EXPECT_EQ(config->models(1).weights(), (dir / kDefaultCoarseModelFile).string());
  EXPECT_EQ(config->models(0).speed().fastest_model(), "phantom-ct-coarse");
  EXPECT_EQ(config->default_model(), "phantom-ct");
  std::filesystem::remove_all(dir);
}

TEST_F(CommandLineTest, TheDefaultModelOnlyWhenNoneIsNamed) {
  const std::string missing = upp::testing::UniqueTempPath("cl_missing.safetensors");
  CommandLine flags;
  auto config = AssembleConfig(flags, {missing, weights_});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models_size(), 1);
  EXPECT_EQ(config->models(0).name(), "phantom-ct");
  EXPECT_EQ(config->models(0).weights(), weights_);  // the first candidate that exists
  // A start without a file: this machine only, anonymous callers allowed.
  EXPECT_EQ(config->listen_address(), "127.0.0.1:50051");
  EXPECT_TRUE(config->auth().allow_anonymous());

  flags.config_path = file_;
  config = AssembleConfig(flags, {weights_});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models_size(), 1);
  EXPECT_EQ(config->models(0).name(), "m");

  flags = CommandLine{};
  EXPECT_EQ(AssembleConfig(flags, {missing}).status().code(), absl::StatusCode::kFailedPrecondition);
  flags.config_path = missing;
  EXPECT_FALSE(AssembleConfig(flags, {weights_}).ok());
}

// --weights next to a --config: its model is added and is the default one
// (a request without a model name gets the weights the command line named).
TEST_F(CommandLineTest, WeightsNextToAConfigAreTheDefaultModel) {
  CommandLine flags;
  flags.config_path = file_;
  flags.weights = weights_;
  auto config = AssembleConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models_size(), 2);
  EXPECT_EQ(config->default_model(), "default");
  EXPECT_EQ(config->models(1).weights(), weights_);
}

// Relative file names in a configuration are taken from its folder, so the
// shipped configuration works from any working directory.
TEST_F(CommandLineTest, RelativeFilesAreTakenFromTheConfigsFolder) {
  const std::filesystem::path folder =
      std::filesystem::path(upp::testing::UniqueTempPath("cl_folder")).lexically_normal();
  std::filesystem::create_directories(folder / "conf");
  const std::string path = (folder / "conf" / "server.textproto").string();
  std::ofstream(path) << "tls { cert_file: \"tls/server.pem\" key_file: \"/abs/server.key\" }\n"
                         "auth { api_keys_file: \"keys.txt\" jwt { jwks_file: \"../jwks.json\" } }\n"
                         "models { name: \"m\" weights: \"../weights/m.safetensors\" plan_file: \"plan.json\" }\n";
  CommandLine flags;
  flags.config_path = path;
  auto config = AssembleConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->models(0).weights(), (folder / "weights" / "m.safetensors").string());
  EXPECT_EQ(config->models(0).plan_file(), (folder / "conf" / "plan.json").string());
  EXPECT_EQ(config->tls().cert_file(), (folder / "conf" / "tls" / "server.pem").string());
  EXPECT_EQ(config->tls().key_file(), "/abs/server.key");  // absolute: as written
  EXPECT_EQ(config->auth().api_keys_file(), (folder / "conf" / "keys.txt").string());
  EXPECT_EQ(config->auth().jwt().jwks_file(), (folder / "jwks.json").string());
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace upp::server
