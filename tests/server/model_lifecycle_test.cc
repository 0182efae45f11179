// The version state machine (server/model_lifecycle.h): allowed and refused
// transitions, the default through loads, failures and unloads.
#include "server/model_lifecycle.h"

#include <gtest/gtest.h>

namespace upp::server {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

// `version` loaded and ready; the default when `make_default`.
void LoadReady(ModelLifecycle& m, const std::string& version, bool make_default = true) {
  ASSERT_TRUE(m.BeginLoad(version, kT0).ok());
  ASSERT_TRUE(m.Warming(version, kT0).ok());
  ASSERT_TRUE(m.Ready(version, 1.5, {"sha-" + version, ""}, make_default, kT0).ok());
}

VersionState StateOf(const ModelLifecycle& m, const std::string& version) { return m.Find(version)->state; }

TEST(ModelLifecycleTest, LoadingWarmingReadyMakesTheDefault) {
  ModelLifecycle m;
  EXPECT_EQ(m.default_version(), "");
  ASSERT_TRUE(m.BeginLoad("1", kT0).ok());
  EXPECT_EQ(StateOf(m, "1"), VersionState::kLoading);
  EXPECT_EQ(m.default_version(), "") << "a loading version serves nothing";
  ASSERT_TRUE(m.Warming("1", kT0).ok());
  EXPECT_EQ(m.default_version(), "") << "a warming version serves nothing";
  ASSERT_TRUE(m.Ready("1", 2.0, {"abc", "{}"}, false, kT0 + absl::Seconds(2)).ok());
  EXPECT_EQ(m.default_version(), "1") << "the first ready version is the default even when not asked";
  EXPECT_EQ(m.Find("1")->load_seconds, 2.0);
  EXPECT_EQ(m.Find("1")->details.weights_sha256, "abc");
  EXPECT_EQ(m.Find("1")->since, kT0 + absl::Seconds(2));
}

TEST(ModelLifecycleTest, NewVersionBesideTheOldBecomesDefaultOnlyWhenReady) {
  ModelLifecycle m;
  LoadReady(m, "1");
  ASSERT_TRUE(m.BeginLoad("2", kT0).ok());
  ASSERT_TRUE(m.Warming("2", kT0).ok());
  EXPECT_EQ(m.default_version(), "1");
  ASSERT_TRUE(m.Ready("2", 1, {}, true, kT0).ok());
  EXPECT_EQ(m.default_version(), "2");
  EXPECT_EQ(StateOf(m, "1"), VersionState::kReady) << "the old version serves its pinned requests";
}

TEST(ModelLifecycleTest, FailedLoadKeepsTheOldVersionServing) {
  ModelLifecycle m;
  LoadReady(m, "1");
  ASSERT_TRUE(m.BeginLoad("2", kT0).ok());
  ASSERT_TRUE(m.Failed("2", absl::InvalidArgumentError("wrong shape"), kT0).ok());
  EXPECT_EQ(m.default_version(), "1");
  EXPECT_EQ(StateOf(m, "2"), VersionState::kFailed);
  EXPECT_EQ(m.Find("2")->error, "wrong shape");
  // Failed during warm-up too.
  ASSERT_TRUE(m.BeginLoad("2", kT0).ok()) << "a failed version may be loaded again";
  EXPECT_EQ(m.Find("2")->error, "") << "a new attempt forgets the old error";
  ASSERT_TRUE(m.Warming("2", kT0).ok());
  ASSERT_TRUE(m.Failed("2", absl::InternalError("warm-up failed"), kT0).ok());
  EXPECT_EQ(m.default_version(), "1");
}

TEST(ModelLifecycleTest, RefusedTransitionsNameTheStates) {
  ModelLifecycle m;
  EXPECT_EQ(m.Warming("1", kT0).code(), absl::StatusCode::kFailedPrecondition) << "unknown version";
  LoadReady(m, "1");
  const absl::Status again = m.BeginLoad("1", kT0);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(again.message().find("ready"), std::string::npos) << again;
  EXPECT_FALSE(m.Failed("1", absl::InternalError("x"), kT0).ok()) << "a ready version cannot fail";
  EXPECT_FALSE(m.Unloaded("1", kT0).ok()) << "ready -> unloaded skips unloading";
  ASSERT_TRUE(m.BeginUnload("1", kT0).ok());
  EXPECT_FALSE(m.BeginUnload("1", kT0).ok()) << "already unloading";
  EXPECT_FALSE(m.BeginLoad("1", kT0).ok()) << "reloaded only once unloaded";
  EXPECT_FALSE(m.MakeDefault("1").ok());
  ASSERT_TRUE(m.Unloaded("1", kT0).ok());
  EXPECT_TRUE(m.BeginLoad("1", kT0).ok());
}

TEST(ModelLifecycleTest, UnloadingTheDefaultHandsOverToTheNewestReady) {
  ModelLifecycle m;
  LoadReady(m, "9");
  LoadReady(m, "10", /*make_default=*/false);
  LoadReady(m, "3", /*make_default=*/false);
  ASSERT_TRUE(m.MakeDefault("3").ok());
  ASSERT_TRUE(m.BeginUnload("3", kT0).ok());
  EXPECT_EQ(m.default_version(), "10") << "numbers compare as numbers";
  ASSERT_TRUE(m.BeginUnload("10", kT0).ok());
  ASSERT_TRUE(m.BeginUnload("9", kT0).ok());
  EXPECT_EQ(m.default_version(), "") << "nothing serves while every version unloads";
  EXPECT_EQ(StateOf(m, "9"), VersionState::kUnloading);
}

TEST(ModelLifecycleTest, PastVersionsAreBounded) {
  ModelLifecycle m;
  for (int i = 0; i < 3 * ModelLifecycle::kMaxPastVersions; ++i) {
    const std::string v = std::to_string(i);
    ASSERT_TRUE(m.BeginLoad(v, kT0 + absl::Seconds(i)).ok());
    ASSERT_TRUE(m.Failed(v, absl::NotFoundError("gone"), kT0 + absl::Seconds(i)).ok());
  }
  LoadReady(m, "live");
  const auto all = m.versions();
  EXPECT_EQ(all.size(), ModelLifecycle::kMaxPastVersions + 1u);
  EXPECT_EQ(m.Find("0"), nullptr) << "the oldest failure is forgotten first";
  EXPECT_NE(m.Find("live"), nullptr);
  EXPECT_NE(m.Find(std::to_string(3 * ModelLifecycle::kMaxPastVersions - 1)), nullptr);
}

TEST(ModelLifecycleTest, VersionsListedOldestFirst) {
  ModelLifecycle m;
  LoadReady(m, "10");
  LoadReady(m, "2");
  const auto all = m.versions();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].version, "2");
  EXPECT_EQ(all[1].version, "10");
  EXPECT_STREQ(VersionStateName(all[0].state), "ready");
}

}  // namespace
}  // namespace upp::server
