// The model repository reader (server/model_repository.h): version folders,
// the READY marker, version policies, listed versions, bad files.
#include "server/model_repository.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "server/config.h"

namespace upp::server {
namespace {

namespace fs = std::filesystem;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("repo_" + std::to_string(getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "ct");
  }
  void TearDown() override { fs::remove_all(root_); }

  // A version folder of model "ct"; published (READY) when `ready`.
  fs::path Version(const std::string& v, bool ready = true, const std::string& card = "") {
    const fs::path f = root_ / "ct" / v;
    fs::create_directories(f);
    std::ofstream(f / kWeightsFileName) << "weights " << v;
    if (!card.empty()) std::ofstream(f / kModelCardFileName) << card;
    if (ready) std::ofstream(f / kReadyMarker) << "";
    return f;
  }
  unetrpp::v1::ModelEntry Entry(const std::string& policy = "") const {
    auto config = ParseConfig("models { name: 'ct' repository: '" + root_.string() + "' " + policy + " }");
    EXPECT_TRUE(config.ok()) << config.status();
    return config->models(0);
  }
  static std::vector<std::string> Names(const VersionScan& scan) {
    std::vector<std::string> out;
    for (const auto& v : scan.versions) out.push_back(v.version);
    return out;
  }

  fs::path root_;
};

TEST(VersionOrderTest, NumbersAsNumbersElseText) {
  EXPECT_TRUE(VersionBefore("9", "10"));
  EXPECT_FALSE(VersionBefore("10", "9"));
  EXPECT_TRUE(VersionBefore("002", "10"));
  EXPECT_FALSE(VersionBefore("7", "7"));
  EXPECT_TRUE(VersionBefore("2024-01", "2024-02"));
}

TEST_F(ModelRepositoryTest, NewestVersionByDefault) {
  Version("1");
  Version("2");
  Version("10");
  auto scan = ScanVersions(Entry());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(Names(*scan), std::vector<std::string>{"10"});
  EXPECT_EQ(scan->versions[0].weights, (root_ / "ct" / "10" / kWeightsFileName).string());
  EXPECT_TRUE(scan->versions[0].plan_file.empty());
}

TEST_F(ModelRepositoryTest, LatestNAndSpecificPolicies) {
  for (const char* v : {"1", "2", "3", "4"}) Version(v);
  auto latest = ScanVersions(Entry("version_policy { latest: 2 }"));
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(Names(*latest), (std::vector<std::string>{"3", "4"}));
  auto specific = ScanVersions(Entry("version_policy { specific: ['3', '1'] }"));
  ASSERT_TRUE(specific.ok()) << specific.status();
  EXPECT_EQ(Names(*specific), (std::vector<std::string>{"1", "3"}));
  auto missing = ScanVersions(Entry("version_policy { specific: ['7'] }"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("version_policy.specific[0]"), std::string::npos) << missing.status();
}

TEST_F(ModelRepositoryTest, FolderWithoutMarkerIsSkippedNotRead) {
  Version("1");
  Version("2", /*ready=*/false);  // still being copied
  fs::create_directories(root_ / "ct" / ".3.partial");
  auto scan = ScanVersions(Entry());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(Names(*scan), std::vector<std::string>{"1"});
  ASSERT_EQ(scan->skipped.size(), 1u);
  EXPECT_NE(scan->skipped[0].find("incomplete"), std::string::npos) << scan->skipped[0];
  std::ofstream(root_ / "ct" / "2" / kReadyMarker) << "";  // published now
  EXPECT_EQ(Names(*ScanVersions(Entry())), std::vector<std::string>{"2"});
}

TEST_F(ModelRepositoryTest, NoCompleteVersionNamesTheFolder) {
  Version("1", /*ready=*/false);
  auto scan = ScanVersions(Entry());
  ASSERT_FALSE(scan.ok());
  EXPECT_NE(scan.status().message().find((root_ / "ct").string()), std::string::npos) << scan.status();
  fs::remove_all(root_ / "ct");
  EXPECT_EQ(ScanVersions(Entry()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelRepositoryTest, PublishedWithoutWeightsNamesThePath) {
  const fs::path f = Version("1");
  fs::remove(f / kWeightsFileName);
  auto scan = ScanVersions(Entry());
  ASSERT_FALSE(scan.ok());
  EXPECT_NE(scan.status().message().find((f / kWeightsFileName).string()), std::string::npos) << scan.status();
}

TEST_F(ModelRepositoryTest, ModelCardIsKeptAndChecked) {
  Version("1", true, R"({"modality": "CT", "intended_use": "research", "training_data": "phantoms"})");
  auto scan = ScanVersions(Entry());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_NE(scan->versions[0].card_json.find("research"), std::string::npos);

  Version("2", true, "{not json");
  auto bad = ScanVersions(Entry());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find((root_ / "ct" / "2" / kModelCardFileName).string()), std::string::npos)
      << bad.status();
  Version("2", true, R"({"modality": "PET"})");
  EXPECT_NE(ScanVersions(Entry()).status().message().find("modality"), std::string::npos);
}

TEST_F(ModelRepositoryTest, PlanFileIsUsedWhenPresent) {
  const fs::path f = Version("1");
  std::ofstream(f / kPlanFileName) << "{}";
  auto scan = ScanVersions(Entry());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->versions[0].plan_file, (f / kPlanFileName).string());
  const auto entry = EntryForVersion(Entry(), scan->versions[0]);
  EXPECT_EQ(entry.version(), "1");
  EXPECT_EQ(entry.weights(), (f / kWeightsFileName).string());
  EXPECT_TRUE(entry.repository().empty());
}

TEST(ListedVersionsTest, VersionsFromTheConfiguration) {
  auto config = ParseConfig(
      "models { name: 'ct' versions { version: '1' weights: 'a.safetensors' } "
      "versions { version: '2' weights: 'b.safetensors' plan_file: 'p.json' } version_policy { latest: 2 } }");
  ASSERT_TRUE(config.ok()) << config.status();
  auto scan = ScanVersions(config->models(0));
  ASSERT_TRUE(scan.ok()) << scan.status();
  ASSERT_EQ(scan->versions.size(), 2u);
  EXPECT_EQ(scan->versions[1].weights, "b.safetensors");
  EXPECT_EQ(scan->versions[1].plan_file, "p.json");
}

TEST(ListedVersionsTest, SingleWeightsIsOneVersion) {
  auto config = ParseConfig("models { name: 'ct' weights: 'w.safetensors' version: '3' }");
  auto scan = ScanVersions(config->models(0));
  ASSERT_TRUE(scan.ok()) << scan.status();
  ASSERT_EQ(scan->versions.size(), 1u);
  EXPECT_EQ(scan->versions[0].version, "3");
}

TEST(ListedVersionsTest, ValidationNamesTheField) {
  const auto check = [](const std::string& model) {
    auto config = ParseConfig("models { name: 'ct' " + model + " }");
    EXPECT_TRUE(config.ok()) << config.status();
    return ValidateVersionSource(config->models(0), "models[0]");
  };
  EXPECT_TRUE(check("weights: 'w'").ok());
  EXPECT_NE(check("").message().find("models[0].weights"), std::string::npos);
  EXPECT_NE(check("weights: 'w' repository: '/r'").message().find("give one"), std::string::npos);
  EXPECT_NE(check("versions { version: '1' weights: 'a' } versions { version: '1' weights: 'b' }")
                .message()
                .find("models[0].versions[1].version"),
            std::string::npos);
  EXPECT_NE(check("versions { version: '../x' weights: 'a' }").message().find("versions[0].version"),
            std::string::npos);
  EXPECT_NE(check("versions { version: '1' }").message().find("versions[0].weights"), std::string::npos);
  EXPECT_NE(check("repository: '/r' version_policy { latest: 1 specific: '1' }").message().find("version_policy"),
            std::string::npos);
}

// A version is the SEG's Algorithm Version (LO: 64 characters at most): a
// longer one is refused where it enters, naming the field, not found out
// by the first SEG.
TEST(ListedVersionsTest, AVersionOver64CharactersIsRefusedNamingTheField) {
  const std::string v64(64, '7'), v65(65, '7');
  const auto validate = [](const std::string& model) {
    auto config = ParseConfig("models { name: 'ct' " + model + " }");
    EXPECT_TRUE(config.ok()) << config.status();
    return ValidateConfig(*config);
  };
  auto fits = ParseConfig("models { name: 'ct' weights: 'w' version: '" + v64 + "' }");
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_TRUE(ValidateVersionSource(fits->models(0), "models[0]").ok());
  for (const auto& [model, field] : std::vector<std::pair<std::string, std::string>>{
           {"weights: 'w' version: '" + v65 + "'", "models[0].version"},
           {"weights: 'w' version: 'a\\\\b'", "models[0].version"},  // a backslash: not LO text
           {"versions { version: '" + v65 + "' weights: 'w' }", "models[0].versions[0].version"},
           {"repository: '/r' version_policy { specific: '" + v65 + "' }", "models[0].version_policy.specific[0]"}}) {
    const absl::Status s = validate(model);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << model;
    EXPECT_NE(s.message().find(field + ": 1 to 64"), std::string::npos) << s;
  }
}

TEST_F(ModelRepositoryTest, AFolderNamedOver64CharactersIsSkippedAndNamed) {
  Version("1");
  Version(std::string(65, '2'));
  auto scan = ScanVersions(Entry());
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(Names(*scan), std::vector<std::string>{"1"});
  ASSERT_EQ(scan->skipped.size(), 1u);
  EXPECT_NE(scan->skipped[0].find("1 to 64"), std::string::npos) << scan->skipped[0];
}

}  // namespace
}  // namespace upp::server
