// The registry's versions (server/model_registry.h) with the small fixture
// model: a version loaded beside the serving one, requests pinned to the
// version they began with, failed loads that keep the old version, the
// memory check, and retirement once the last pin is gone.
#include "server/model_registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "model/cpu_threads.h"
#include "server/config.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/rss.h"

namespace upp::server {
namespace {

constexpr char kWeights[] = UPP_FIXTURES_DIR "/synapse_small_weights.safetensors";

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

class ModelRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model::ConfigureCpuThreads(1); }

  // Model "m" with versions 1 and 2 of the fixture weights and version
  // "broken" whose weights are not a safetensors file; version 1 served.
  unetrpp::v1::ServerConfig Config() {
    const std::string plan = testing::SmallPlanFile("registry_test_plan.json");
    broken_ = TempPath("broken.safetensors");
    std::ofstream(broken_) << "not a safetensors file";
    auto config = ParseConfig(std::string("models { name: 'm' ") + "versions { version: '1' weights: '" + kWeights +
                              "' plan_file: '" + plan + "' } " + "versions { version: '2' weights: '" + kWeights +
                              "' plan_file: '" + plan + "' } " + "versions { version: 'broken' weights: '" + broken_ +
                              "' } " + "version_policy { specific: '1' } }\nlimits { max_bytes_in_flight: 1048576 }");
    EXPECT_TRUE(config.ok()) << config.status();
    ApplyDefaults(*config);
    EXPECT_TRUE(ValidateConfig(*config).ok()) << ValidateConfig(*config);
    return *config;
  }
  std::unique_ptr<ModelRegistry> Start(RegistryOptions options = RegistryOptions()) {
    auto r = ModelRegistry::Load(Config(), nullptr, &pool_, std::move(options));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  static VersionState StateOf(const ModelRegistry& r, const std::string& version) {
    const auto d = r.Describe("m");
    for (const auto& v : d->versions)
      if (v.version == version) return v.state;
    ADD_FAILURE() << "no version " << version;
    return VersionState::kFailed;
  }

  ThreadPool pool_{2};
  std::string broken_;
};

TEST_F(ModelRegistryTest, NewVersionServesNewRequestsPinnedOnesKeepTheirs) {
  auto r = Start();
  ASSERT_TRUE(r);
  auto old_pin = r->Acquire("m");
  ASSERT_TRUE(old_pin.ok()) << old_pin.status();
  EXPECT_EQ((*old_pin)->version(), "1");
  EXPECT_EQ((*old_pin)->weights_sha256().size(), 64u);

  ASSERT_TRUE(r->LoadVersion({"m", "2"}).ok());
  auto new_pin = r->Acquire("m");
  ASSERT_TRUE(new_pin.ok()) << new_pin.status();
  EXPECT_EQ((*new_pin)->version(), "2");
  EXPECT_NE(&(*new_pin)->batcher(), &(*old_pin)->batcher()) << "two versions never share a batcher";
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kUnloading) << "held by a request";
  EXPECT_EQ(r->Acquire("m", "1").status().code(), absl::StatusCode::kNotFound) << "no new request gets it";
  EXPECT_EQ((*old_pin)->version(), "1") << "the held version is still there";

  old_pin->Reset();
  r->WaitRetired();
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kUnloaded);
  const auto d = r->Describe("m");
  EXPECT_EQ(d->default_version, "2");
  EXPECT_GT(d->versions.back().load_seconds, 0);
}

TEST_F(ModelRegistryTest, FailedLoadKeepsTheOldVersionAndSaysWhy) {
  auto r = Start();
  ASSERT_TRUE(r);
  const absl::Status s = r->LoadVersion({"m", "broken"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("broken"), std::string::npos) << s;
  EXPECT_EQ(StateOf(*r, "broken"), VersionState::kFailed);
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kReady);
  auto pin = r->Acquire("m");
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ((*pin)->version(), "1");
  bool error_reported = false;
  const auto d = r->Describe("m");
  for (const auto& v : d->versions) error_reported |= v.version == "broken" && !v.error.empty();
  EXPECT_TRUE(error_reported);
  EXPECT_EQ(r->LoadVersion({"m", "9"}).code(), absl::StatusCode::kNotFound) << "not offered";
}

TEST_F(ModelRegistryTest, KeepPreviousLeavesBothReady) {
  auto r = Start();
  ASSERT_TRUE(r);
  LoadRequest request{"m", "2"};
  request.keep_previous = true;
  ASSERT_TRUE(r->LoadVersion(request).ok());
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kReady);
  auto pinned = r->Acquire("m", "1");
  ASSERT_TRUE(pinned.ok()) << "a request may name a version";
  EXPECT_EQ((*pinned)->version(), "1");
  EXPECT_EQ((*r->Acquire("m"))->version(), "2");
  pinned->Reset();
  ASSERT_TRUE(r->UnloadVersion("m", "2").ok());
  EXPECT_EQ((*r->Acquire("m"))->version(), "1") << "the default goes back to the other ready version";
  EXPECT_EQ(r->UnloadVersion("m", "2").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelRegistryTest, BothVersionsMustFitBesideTheAdmissionBudget) {
  const auto weights = static_cast<int64_t>(std::filesystem::file_size(kWeights));
  RegistryOptions options;
  options.host_memory_bytes = 1048576 + weights + weights / 2;  // one version and the budget, not two
  auto r = Start(options);
  ASSERT_TRUE(r);
  const absl::Status refused = r->LoadVersion({"m", "2"});
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("drain_then_load"), std::string::npos) << refused;
  EXPECT_EQ((*r->Acquire("m"))->version(), "1") << "refused before anything changed";

  LoadRequest drain{"m", "2"};
  drain.drain_then_load = true;
  ASSERT_TRUE(r->LoadVersion(drain).ok());
  EXPECT_EQ((*r->Acquire("m"))->version(), "2");
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kUnloaded) << "drained before the load";
}

// The memory of retired versions returns: the registry's own count (what
// the memory check of the next load sees) comes back to one version's, and
// the process's resident memory to within a bound of its level, after ten
// swaps with requests holding the old versions.
TEST_F(ModelRegistryTest, MemoryReturnsOnceOldVersionsAreRetired) {
  auto r = Start();
  ASSERT_TRUE(r);
  const auto one_version = r->MemoryBytes();
  ASSERT_GT(one_version.at("cpu"), 0);
  // One swap there and back first: the allocator's and the kernels' first
  // allocations are not what retiring has to give back.
  ASSERT_TRUE(r->LoadVersion({"m", "2"}).ok());
  ASSERT_TRUE(r->LoadVersion({"m", "1"}).ok());
  r->WaitRetired();
  const int64_t rss_before = testing::ProcStatusBytes("VmRSS");
  for (int swap = 0; swap < 10; ++swap) {
    r->WaitRetired();             // the previous swap's old version is freed
    auto held = r->Acquire("m");  // a request on the old version
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_TRUE(r->LoadVersion({"m", swap % 2 == 0 ? "2" : "1"}).ok()) << "swap " << swap;
    EXPECT_EQ(r->MemoryBytes().at("cpu"), 2 * one_version.at("cpu")) << "the held version is counted until freed";
  }
  r->WaitRetired();
  EXPECT_EQ(r->MemoryBytes(), one_version) << "every retired version's memory is given back in the count";
  const int64_t rss_after = testing::ProcStatusBytes("VmRSS");
  // Ten versions' weights and workers kept would be far more than this.
  const int64_t weights = static_cast<int64_t>(std::filesystem::file_size(kWeights));
  EXPECT_LT(rss_after - rss_before, 3 * weights + (int64_t{16} << 20))
      << "RSS " << (rss_before >> 20) << " -> " << (rss_after >> 20) << " MiB";
}

// A re-read configuration (SIGHUP): the registry follows the new policy as
// the poll does, tries a version that failed before again, keeps the
// serving version when the new one fails, and checks loads against the new
// admission budget.
TEST_F(ModelRegistryTest, ReconfigureFollowsTheNewPolicy) {
  const auto weights = static_cast<int64_t>(std::filesystem::file_size(kWeights));
  RegistryOptions options;
  options.host_memory_bytes = 1048576 + 3 * weights;  // two versions beside the 1 MiB budget
  auto r = Start(options);
  ASSERT_TRUE(r);
  auto config = Config();
  config.mutable_models(0)->mutable_version_policy()->set_specific(0, "2");
  r->Reconfigure(config);
  EXPECT_EQ((*r->Acquire("m"))->version(), "2");
  r->WaitRetired();
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kUnloaded) << "no longer in the policy";

  config.mutable_models(0)->mutable_version_policy()->set_specific(0, "broken");
  r->Reconfigure(config);
  EXPECT_EQ(StateOf(*r, "broken"), VersionState::kFailed);
  EXPECT_EQ((*r->Acquire("m"))->version(), "2") << "the failed version did not take the serving one down";
  r->Reconfigure(config);  // the same configuration, the file still broken
  EXPECT_EQ(StateOf(*r, "broken"), VersionState::kFailed);
  EXPECT_EQ((*r->Acquire("m"))->version(), "2");
  // The file mended in place, the same configuration again: tried again.
  std::filesystem::copy_file(kWeights, broken_, std::filesystem::copy_options::overwrite_existing);
  r->Reconfigure(config);
  EXPECT_EQ((*r->Acquire("m"))->version(), "broken");
  r->WaitRetired();
  EXPECT_EQ(StateOf(*r, "2"), VersionState::kUnloaded);

  // The new admission budget leaves no room for a second version.
  config.mutable_models(0)->mutable_version_policy()->set_specific(0, "1");
  config.mutable_limits()->set_max_bytes_in_flight(3 * static_cast<uint64_t>(weights));
  r->Reconfigure(config);
  EXPECT_EQ((*r->Acquire("m"))->version(), "broken");
  EXPECT_EQ(StateOf(*r, "1"), VersionState::kUnloaded) << "refused by the memory check: not even loading";
}

// SIGTERM after SIGHUP (docs/server.md): Shutdown while a reload that
// loads five more versions is queued on the management thread. The loads
// not yet begun are not made (one under way may finish), so Shutdown is
// not held up for every version's loading and warm-up.
TEST_F(ModelRegistryTest, ShutdownDoesNotWaitForAQueuedReloadsLoads) {
  RegistryOptions options;
  options.warmup_windows_per_worker = 8;  // each load a while
  auto config = Config();
  const absl::Time start_load = absl::Now();
  auto loaded = ModelRegistry::Load(config, nullptr, &pool_, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const absl::Duration one_load = absl::Now() - start_load;
  std::unique_ptr<ModelRegistry> r = *std::move(loaded);
  auto& model = *config.mutable_models(0);
  model.mutable_version_policy()->clear_specific();
  model.mutable_version_policy()->add_specific("1");
  for (const char* v : {"3", "4", "5", "6", "7"}) {
    auto* version = model.add_versions();
    *version = model.versions(0);
    version->set_version(v);
    model.mutable_version_policy()->add_specific(v);
  }
  r->RunManagement([&r, config] { r->Reconfigure(config); });
  const absl::Time start_shutdown = absl::Now();
  r->Shutdown();
  const absl::Duration shutdown = absl::Now() - start_shutdown;
  // Held in a variable: a range-for over Describe("m")->versions read the
  // versions of a StatusOr already destroyed (ThreadSanitizer:
  // heap-use-after-free).
  const auto described = r->Describe("m");
  ASSERT_TRUE(described.ok()) << described.status();
  int ready = 0;
  for (const auto& v : described->versions) ready += v.state == VersionState::kReady;
  EXPECT_LE(ready, 2) << "version 1 and at most the one load under way";
  // Generous: the five loads take about five times one_load.
  EXPECT_LT(shutdown, 3 * one_load + absl::Seconds(1)) << "one load took " << one_load;
}

TEST_F(ModelRegistryTest, UnknownModelAndVersionAreNotFound) {
  auto r = Start();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Acquire("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Acquire("m", "2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->LoadVersion({"x", ""}).code(), absl::StatusCode::kNotFound);
}

// The poll loads only complete folders, keeps the old version serving when
// the new one is broken, keeps polling after that failure, and retires the
// old version once the new one serves.
TEST_F(ModelRegistryTest, PollFollowsCompleteFoldersAndSurvivesAFailure) {
  namespace fs = std::filesystem;
  const fs::path root = TempPath("poll_repo");
  fs::remove_all(root);
  const std::string plan = testing::SmallPlanFile("registry_test_plan.json");
  Config();  // writes broken_
  const auto publish = [&](const std::string& v, const std::string& weights, bool ready) {
    const fs::path f = root / "m" / v;
    fs::create_directories(f);
    fs::copy_file(weights, f / kWeightsFileName, fs::copy_options::overwrite_existing);
    fs::copy_file(plan, f / kPlanFileName, fs::copy_options::overwrite_existing);
    if (ready) std::ofstream(f / kReadyMarker) << "";
  };
  publish("1", kWeights, true);
  auto config = ParseConfig("models { name: 'm' repository: '" + root.string() + "' }");
  ASSERT_TRUE(config.ok()) << config.status();
  ApplyDefaults(*config);
  auto loaded = ModelRegistry::Load(*config, nullptr, &pool_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto& r = **loaded;
  const auto serving = [&] { return (*r.Acquire("m"))->version(); };
  const auto wait_for = [&](const std::function<bool()>& done) {
    for (int i = 0; i < 200 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done();
  };
  r.StartPolling(absl::Milliseconds(100));

  publish("2", kWeights, /*ready=*/false);  // still being copied
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(serving(), "1");
  EXPECT_EQ(r.Describe("m")->versions.size(), 1u) << "an incomplete folder is not even tried";

  publish("3", broken_, /*ready=*/true);  // complete, but broken
  EXPECT_TRUE(wait_for([&] {
    const auto d = r.Describe("m");
    return d->versions.back().version == "3" && d->versions.back().state == VersionState::kFailed;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(serving(), "1") << "the broken version did not take the old one down";

  fs::remove_all(root / "m" / "3");
  std::ofstream(root / "m" / "2" / kReadyMarker) << "";  // published now
  EXPECT_TRUE(wait_for([&] { return serving() == "2"; })) << "the poll went on after the failure";
  EXPECT_TRUE(wait_for([&] { return StateOf(r, "1") == VersionState::kUnloaded; }));
  r.Shutdown();
  fs::remove_all(root);
}

}  // namespace
}  // namespace upp::server
