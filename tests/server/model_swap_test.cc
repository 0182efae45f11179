// Model management over gRPC (LoadModel, UnloadModel, versions in
// ListModels, the version in every result) against the in-process server,
// and the swap under load: clients sending all along while the model is
// swapped between two weight files (issue 29).
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "clients/cpp/client.h"
#include "imageio/file_util.h"
#include "imageio/labels.h"
#include "model/cpu_threads.h"
#include "model/safetensors.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/model_repository.h"
#include "server/server.h"
#include "server/system_memory.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/dicom_bytes.h"
#include "tests/testing/rss.h"

namespace upp::server {
namespace {

constexpr char kAdminKey[] = "admin-key-5e1f07";
constexpr char kUserKey[] = "user-key-0c77a2";
constexpr char kPhantomWeights[] = UPP_SOURCE_DIR "/model/weights/phantom_ct_v1.safetensors";

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

// A small phantom, its labels asked for; `version`: pinned (empty: the default).
absl::StatusOr<client::SegmentResult> SegmentPhantom(client::Client& c, const std::string& version = "") {
  static const std::string input = testing::FloatNifti(testing::Phantom({48, 40, 12}, {2.0, 2.0, 5.0}));
  client::SegmentOptions o;
  o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  o.model_version = version;
  return c.Segment({input}, o);
}

// Version 2: random weights of the phantom model's shape, with its plan.
void WriteSecondVersion(const std::string& weights, const std::string& plan) {
  const std::string cmd = std::string(UPP_RANDOM_WEIGHTS) +
                          " --patch 32 64 64 --stem 2 4 4 --depths 1 1 1 1 --feature-size 8 --heads 4 --classes 8"
                          " --in-channels 1 --seed 7 -o " +
                          weights + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto reader = model::SafetensorsReader::Open(kPhantomWeights);
  ASSERT_TRUE(reader.ok());
  std::ofstream(plan) << (*reader)->metadata().at("unetrpp_plan");
}

class ModelSwapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ConfigureCpuThreads(1);
    WriteSecondVersion(TempPath("v2.safetensors"), TempPath("plan.json"));
    std::ofstream(TempPath("broken.safetensors")) << "not weights";
    std::ofstream(TempPath("keys.txt")) << "admin " << Authenticator::HashKey(kAdminKey) << " admin\n"
                                        << "user " << Authenticator::HashKey(kUserKey) << " user\n";
  }
  // Model "ct" with version 1 (the phantom model), 2 (random weights) and 3
  // (not weights); `policy`: its version_policy's fields; `extra`: more
  // configuration.
  std::string ConfigText(const std::string& policy, const std::string& extra = "") const {
    return "listen_address: '127.0.0.1:0'\nmetrics_address: '127.0.0.1:" + std::to_string(metrics_port_) +
           "'\ncpu_threads: 2\n"
           "auth { api_keys_file: '" +
           TempPath("keys.txt") + "' audit_log_file: '" + TempPath("audit.jsonl") +
           "' allow_anonymous: true }\n"
           "batching { max_queue_delay_us: 500 }\n"
           // fp32 on every CPU (bf16 is the default on AMX and Zen 5): each
           // result must equal its version's reference exactly.
           "models { name: 'ct' precision: 'fp32' versions { version: '1' weights: '" +
           kPhantomWeights + "' } versions { version: '2' weights: '" + TempPath("v2.safetensors") + "' plan_file: '" +
           TempPath("plan.json") + "' } versions { version: '3' weights: '" + TempPath("broken.safetensors") +
           "' } version_policy { " + policy + " } }\n" + extra;
  }
  void SetUp() override {
    std::remove(TempPath("audit.jsonl").c_str());
    metrics_port_ = testing::FreePort();
    auto config = ParseConfig(ConfigText("specific: '1'"));
    ASSERT_TRUE(config.ok()) << config.status();
    auto server = Server::Create(*config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::unique_ptr<client::Client> As(const std::string& token) const {
    client::ConnectOptions o;
    o.token = token;
    return std::move(client::Client::Connect("127.0.0.1:" + std::to_string(server_->port()), o).value());
  }
  static absl::StatusOr<client::SegmentResult> Segment(client::Client& c, const std::string& version = "") {
    return SegmentPhantom(c, version);
  }
  // Waits (at most 10 s) until the model has one version ready or unloading:
  // the others are unloaded, their memory freed.
  static unetrpp::v1::ModelInfo WaitForOneLiveVersion(client::Client& c) {
    unetrpp::v1::ModelInfo info;
    for (int i = 0; i < 100; ++i) {
      info = *c.GetModel("ct");
      int live = 0;
      for (const auto& v : info.versions()) live += v.state() == "ready" || v.state() == "unloading";
      if (live == 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return info;
  }
  static unetrpp::v1::LoadModelRequest Load(const std::string& version, bool keep_previous = false) {
    unetrpp::v1::LoadModelRequest r;
    r.set_name("ct");
    r.set_version(version);
    r.set_keep_previous(keep_previous);
    return r;
  }
  static const unetrpp::v1::ModelVersionInfo* Version(const unetrpp::v1::ModelInfo& info, const std::string& v) {
    for (const auto& version : info.versions())
      if (version.version() == v) return &version;
    return nullptr;
  }
  // The audit log's management records.
  static std::vector<nlohmann::json> AuditRecords() {
    std::vector<nlohmann::json> out;
    std::ifstream in(TempPath("audit.jsonl"));
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (r.is_object() && absl::StrContains(r.value("method", ""), "Model")) out.push_back(std::move(r));
    }
    return out;
  }

  int metrics_port_ = 0;
  std::unique_ptr<Server> server_;
};

TEST_F(ModelSwapTest, ManagementNeedsAdminCredentialsAndIsAudited) {
  const auto anonymous = As("")->LoadModel(Load("2"));
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated) << anonymous.status();
  const auto user = As(kUserKey)->LoadModel(Load("2"));
  EXPECT_EQ(user.status().code(), absl::StatusCode::kPermissionDenied) << user.status();
  EXPECT_EQ(As(kUserKey)->UnloadModel("ct", "1").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(As("nonsense")->UnloadModel("ct", "1").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(As(kUserKey)->GetModel("ct")->version(), "1") << "refused calls changed nothing";

  const auto admin = As(kAdminKey)->LoadModel(Load("2", /*keep_previous=*/true));
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_EQ(admin->version(), "2");
  const auto unloaded = As(kAdminKey)->UnloadModel("ct", "1");
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();

  // One record per call, with the caller, what was asked and the outcome.
  const auto records = AuditRecords();
  const auto count = [&](const std::string& principal, const std::string& method, const std::string& status) {
    int n = 0;
    for (const auto& r : records)
      n += r.value("principal", "") == principal && r.value("method", "") == method &&
           r.value("status", "") == status && r.value("model", "") == "ct" && r.value("peer", "") == "127.0.0.1";
    return n;
  };
  EXPECT_EQ(count("anonymous", "LoadModel", "UNAUTHENTICATED"), 1);
  EXPECT_EQ(count("user", "LoadModel", "PERMISSION_DENIED"), 1);
  EXPECT_EQ(count("user", "UnloadModel", "PERMISSION_DENIED"), 1);
  EXPECT_EQ(count("-", "UnloadModel", "UNAUTHENTICATED"), 1);
  EXPECT_EQ(count("admin", "LoadModel", "OK"), 1);
  EXPECT_EQ(count("admin", "UnloadModel", "OK"), 1);
  for (const auto& r : records)
    if (r.value("principal", "") == "admin" && r.value("method", "") == "UnloadModel") {
      EXPECT_EQ(r.value("version", ""), "1");
      EXPECT_EQ(r.value("serving", ""), "2") << "the version left serving";
    }
}

TEST_F(ModelSwapTest, ModelsShowVersionsStateAndFailures) {
  const auto failed = As(kAdminKey)->LoadModel(Load("3"));
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("broken.safetensors"), std::string::npos) << failed.status();
  const auto models = As(kUserKey)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  const auto& ct = models->models(0);
  EXPECT_TRUE(ct.ready());
  EXPECT_EQ(ct.version(), "1") << "the failed load left version 1 serving";
  const auto* v1 = Version(ct, "1");
  ASSERT_NE(v1, nullptr);
  EXPECT_EQ(v1->state(), "ready");
  EXPECT_TRUE(v1->is_default());
  EXPECT_GT(v1->load_seconds(), 0);
  EXPECT_EQ(v1->weights_sha256().size(), 64u);
  const auto* v3 = Version(ct, "3");
  ASSERT_NE(v3, nullptr);
  EXPECT_EQ(v3->state(), "failed");
  EXPECT_FALSE(v3->error().empty());
  EXPECT_EQ(As(kAdminKey)->LoadModel(Load("7")).status().code(), absl::StatusCode::kNotFound);
  // Not a version name (the SEG's Algorithm Version holds 64 characters):
  // refused as such, not looked for.
  const auto too_long = As(kAdminKey)->LoadModel(Load(std::string(65, '1')));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument) << too_long.status();
  EXPECT_NE(too_long.status().message().find("1 to 64"), std::string::npos) << too_long.status();
}

TEST_F(ModelSwapTest, ResultNamesTheVersionItRanOn) {
  auto c = As(kUserKey);
  const auto r = Segment(*c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->header.model(), "ct");
  EXPECT_EQ(r->header.model_version(), "1");
  EXPECT_EQ(r->header.weights_sha256(), Version(*c->GetModel("ct"), "1")->weights_sha256());
  EXPECT_EQ(Segment(*c, "2").status().code(), absl::StatusCode::kNotFound) << "version 2 is not loaded";
}

// The DICOM SEG names the model, the version the request ran on and its
// weights in each segment's Segmentation Algorithm Identification.
TEST_F(ModelSwapTest, TheSegNamesTheVersionItRanOn) {
  const auto series = testing::CtSeries(4);
  if (series.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  auto admin = As(kAdminKey);
  ASSERT_TRUE(admin->LoadModel(Load("2", /*keep_previous=*/true)).ok());
  client::SegmentOptions o;
  o.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  o.outputs = {unetrpp::v1::OUTPUT_KIND_DICOM_SEG};
  o.model_version = "1";  // not the default: the SEG names the one that ran
  const auto r = admin->Segment(series, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto file = testing::ReadDicomBytes(r->outputs.at(unetrpp::v1::OUTPUT_KIND_DICOM_SEG));
  ASSERT_NE(file, nullptr);
  DcmSequenceOfItems* segments = testing::SegmentSequence(*file);
  ASSERT_NE(segments, nullptr);
  ASSERT_GT(segments->card(), 0u);
  const std::string sha = Version(*admin->GetModel("ct"), "1")->weights_sha256();
  for (unsigned long i = 0; i < segments->card(); ++i) {
    DcmItem* algorithm = nullptr;
    ASSERT_TRUE(segments->getItem(i)
                    ->findAndGetSequenceItem(DCM_SegmentationAlgorithmIdentificationSequence, algorithm)
                    .good());
    OFString name, version, parameters;
    algorithm->findAndGetOFString(DCM_AlgorithmName, name);
    algorithm->findAndGetOFString(DCM_AlgorithmVersion, version);
    algorithm->findAndGetOFStringArray(DCM_AlgorithmParameters, parameters);
    EXPECT_EQ(std::string(name.c_str()), "UNETR++ ct");
    EXPECT_EQ(std::string(version.c_str()), "1");
    EXPECT_EQ(std::string(parameters.c_str()), "weights_sha256=" + sha);
  }
}

// SIGHUP's reload (Server::Reload, which main() calls with the file read
// again): the new policy's version serves, a version that fails leaves the
// serving one, an invalid file changes nothing, what needs a restart is
// named, and a changed limit applies to the next request.
TEST_F(ModelSwapTest, AReloadedConfigurationChangesVersionsAndLiveLimits) {
  auto c = As(kUserKey);
  const auto reload = [&](const std::string& text) {
    auto result = server_->Reload(ParseConfig(text));
    server_->WaitManagement();  // the versions' loads and unloads
    return result;
  };
  const auto metric = [&](const std::string& series) {
    return testing::MetricValue(testing::HttpGet(metrics_port_, "/metrics"), series);
  };
  auto restart = reload(ConfigText("specific: '2'"));
  ASSERT_TRUE(restart.ok()) << restart.status();
  EXPECT_TRUE(restart->empty()) << restart->front();
  EXPECT_EQ(c->GetModel("ct")->version(), "2");
  auto r = Segment(*c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->header.model_version(), "2");

  ASSERT_TRUE(reload(ConfigText("specific: '3'")).ok());
  auto info = *c->GetModel("ct");
  EXPECT_EQ(info.version(), "2") << "the version that failed left version 2 serving";
  ASSERT_NE(Version(info, "3"), nullptr);
  EXPECT_EQ(Version(info, "3")->state(), "failed");
  EXPECT_NE(Version(info, "3")->error().find("broken.safetensors"), std::string::npos) << Version(info, "3")->error();

  const auto unparsable = reload(ConfigText("specific: '1'", "no_such_field: 1\n"));
  EXPECT_EQ(unparsable.status().code(), absl::StatusCode::kInvalidArgument) << unparsable.status();
  const auto invalid = reload(ConfigText("specific: '1'", "default_model: 'nope'\n"));
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument) << invalid.status();
  EXPECT_NE(invalid.status().message().find("default_model"), std::string::npos) << invalid.status();
  info = *c->GetModel("ct");
  EXPECT_EQ(info.version(), "2") << "an invalid file changed nothing";
  for (int i = 0; i < 100 && Version(info, "1")->state() != "unloaded"; ++i) {  // retired in the background
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    info = *c->GetModel("ct");
  }
  EXPECT_EQ(Version(info, "1")->state(), "unloaded") << "version 1 left the policy";
  EXPECT_EQ(metric("upp_config_reloads_total{result=\"invalid\"}"), 2);
  EXPECT_EQ(metric("upp_config_reloads_total{result=\"applied\"}"), 2);

  restart = reload(ConfigText("specific: '2'", "enable_reflection: true\nlimits { max_voxels: 1000 }\n"));
  ASSERT_TRUE(restart.ok()) << restart.status();
  EXPECT_EQ(*restart, std::vector<std::string>{"enable_reflection"});
  EXPECT_EQ(metric("upp_config_restart_pending_changes"), 1);
  r = Segment(*c);  // 48 x 40 x 12 voxels
  EXPECT_FALSE(r.ok()) << "limits.max_voxels applies to the next request";
  EXPECT_NE(r.status().message().find("1000"), std::string::npos) << r.status();
  ASSERT_TRUE(reload(ConfigText("specific: '2'")).ok());
  EXPECT_TRUE(Segment(*c).ok()) << "and is lifted again";
  EXPECT_EQ(metric("upp_config_restart_pending_changes"), 0);
}

// A reload while a request is in flight: the request keeps the
// configuration it began with at every stage (here its decode's
// limits.max_voxels), the next request gets the new one.
TEST_F(ModelSwapTest, ARequestInFlightKeepsTheConfigurationItBeganWith) {
  auto stub = unetrpp::v1::Segmentation::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Segment(&context);
  unetrpp::v1::SegmentRequest request;
  request.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
  request.mutable_header()->add_outputs(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  ASSERT_TRUE(stream->Write(request));
  unetrpp::v1::SegmentResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_accepted()) << "the header is handled: the call took its configuration";

  // 48 x 40 x 12 voxels, over the new limit.
  auto reloaded = server_->Reload(ParseConfig(ConfigText("specific: '1'", "limits { max_voxels: 1000 }\n")));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  server_->WaitManagement();

  request.mutable_chunk()->set_data(testing::FloatNifti(testing::Phantom({48, 40, 12}, {2.0, 2.0, 5.0})));
  ASSERT_TRUE(stream->Write(request));
  request.mutable_end();
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  bool summary = false;
  while (stream->Read(&response)) summary = summary || response.has_summary();
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(summary);

  auto c = As(kUserKey);
  const auto next = Segment(*c);
  EXPECT_FALSE(next.ok()) << "the next request has the reloaded limit";
  EXPECT_NE(next.status().message().find("1000"), std::string::npos) << next.status();
}

// /proc/self/status's `field` ("VmRSS", "VmHWM") in MiB.
int64_t MemoryMiB(const std::string& field) { return testing::ProcStatusBytes(field) >> 20; }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// The switch benchmark's figures (BENCHMARKS.md): load-and-warm time, the
// latency of requests that overlapped a switch against those before the
// first, and the memory above the level before the switches.
void LogSwitchFigures(const std::vector<std::pair<absl::Time, double>>& latencies,
                      const std::vector<std::pair<absl::Time, absl::Time>>& swaps,
                      const std::vector<double>& load_seconds, int64_t rss_before) {
  std::vector<double> before, during;
  for (const auto& [start, seconds] : latencies) {
    if (start < swaps.front().first) {
      before.push_back(seconds);
      continue;
    }
    const absl::Time end = start + absl::Seconds(seconds);
    for (const auto& [a, b] : swaps)
      if (start < b && end > a) {
        during.push_back(seconds);
        break;
      }
  }
  spdlog::info(
      "switch: load+warm p50 {:.2f} s max {:.2f} s; request latency before switches p50 {:.3f} s p95 {:.3f} s "
      "({} requests), overlapping a switch p50 {:.3f} s p95 {:.3f} s ({} requests); RSS before {} MiB, peak {} MiB, "
      "after {} MiB",
      Percentile(load_seconds, 0.5), Percentile(load_seconds, 1.0), Percentile(before, 0.5), Percentile(before, 0.95),
      before.size(), Percentile(during, 0.5), Percentile(during, 0.95), during.size(), rss_before >> 20,
      MemoryMiB("VmHWM"), MemoryMiB("VmRSS"));
}

// Clients sending one request after another until Stop(), each result
// checked against the reference labels of the version its header names.
// Pause() lets the memory be measured with no request in flight.
class LoadClients {
 public:
  using Reference = std::function<const std::vector<uint16_t>*(const std::string& version)>;
  LoadClients(int n, const std::function<std::unique_ptr<client::Client>()>& connect, Reference reference)
      : reference_(std::move(reference)) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i, c = connect()] { Run(i, *c); });
  }
  ~LoadClients() { Stop(); }
  // Returns once no request is in flight; none starts until Resume().
  void Pause() {
    absl::MutexLock lock(&mu_);
    paused_ = true;
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &in_flight_));
  }
  void Resume() {
    absl::MutexLock lock(&mu_);
    paused_ = false;
  }
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // After Stop(): what failed, the results by version, the latencies.
  const std::vector<std::string>& problems() const { return problems_; }
  const std::map<std::string, int>& results() const { return results_; }
  const std::vector<std::pair<absl::Time, double>>& latencies() const { return latencies_; }

 private:
  bool Go() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !paused_; }
  void Run(int i, client::Client& c) {
    for (;;) {
      {
        absl::MutexLock lock(&mu_, absl::Condition(this, &LoadClients::Go));
        if (stop_) return;
        ++in_flight_;
      }
      const absl::Time start = absl::Now();
      const auto r = SegmentPhantom(c);
      absl::MutexLock lock(&mu_);
      --in_flight_;
      latencies_.emplace_back(start, absl::ToDoubleSeconds(absl::Now() - start));
      if (!r.ok()) {
        problems_.push_back("client " + std::to_string(i) + ": " + r.status().ToString());
        continue;
      }
      const std::string& v = r->header.model_version();
      ++results_[v];
      const std::vector<uint16_t>* expected = reference_(v);
      if (expected == nullptr ||
          imageio::DecodeRawLabels(r->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS)) != *expected)
        problems_.push_back("client " + std::to_string(i) + ": labels differ from version " + v + "'s reference");
    }
  }

  const Reference reference_;
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> results_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<absl::Time, double>> latencies_ ABSL_GUARDED_BY(mu_);
};

// The resident memory with no request in flight and the heap's free pages
// given back (as the registry does after freeing a version), so that two
// such levels compare versions, not the allocator's caches.
int64_t IdleRss(LoadClients& clients) {
  clients.Pause();
  ReturnFreeMemory();
  const int64_t rss = testing::ProcStatusBytes("VmRSS");
  clients.Resume();
  return rss;
}

// What "memory back to its level" allows: the allocator's arenas keep some
// fragments after 8 clients' requests; one version more (12 MiB of weights,
// their packed copies, the workers' buffers) is over it.
constexpr int64_t kRssSlack = int64_t{24} << 20;

// 8 clients send all along while version 1 and version 2 take turns 10
// times by LoadModel: no request fails, each result equals the reference
// result of the version its header names, and once the old versions are
// gone the memory is back to its level before the swaps (two versions were
// loaded then, one after).
TEST_F(ModelSwapTest, SwapUnderLoadFailsNothing) {
  auto admin = As(kAdminKey);
  std::map<std::string, std::vector<uint16_t>> reference;
  const auto one = Segment(*admin);
  ASSERT_TRUE(one.ok()) << one.status();
  reference["1"] = imageio::DecodeRawLabels(one->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS));
  ASSERT_TRUE(admin->LoadModel(Load("2", /*keep_previous=*/true)).ok());
  const auto two = Segment(*admin, "2");
  ASSERT_TRUE(two.ok()) << two.status();
  reference["2"] = imageio::DecodeRawLabels(two->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS));
  ASSERT_NE(reference["1"], reference["2"]) << "the two versions must be told apart by their labels";

  LoadClients clients(
      8, [&] { return As(kUserKey); },
      [&](const std::string& v) { return reference.count(v) ? &reference.at(v) : nullptr; });
  std::this_thread::sleep_for(std::chrono::seconds(2));        // latency before any swap
  const int64_t rss_busy = testing::ProcStatusBytes("VmRSS");  // BENCHMARKS.md's "RSS before"
  const int64_t rss_before = IdleRss(clients);
  std::vector<std::pair<absl::Time, absl::Time>> swaps;  // LoadModel calls
  std::vector<double> load_seconds;
  for (int swap = 0; swap < 10; ++swap) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const absl::Time start = absl::Now();
    const std::string version = swap % 2 == 0 ? "1" : "2";
    const auto loaded = admin->LoadModel(Load(version));
    swaps.emplace_back(start, absl::Now());
    EXPECT_TRUE(loaded.ok()) << "swap " << swap << ": " << loaded.status();
    if (loaded.ok() && Version(*loaded, version)) load_seconds.push_back(Version(*loaded, version)->load_seconds());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto info = WaitForOneLiveVersion(*admin);  // the old versions go once their last requests are done
  const int64_t rss_after = IdleRss(clients);
  clients.Stop();

  for (const auto& p : clients.problems()) ADD_FAILURE() << p;
  const auto& results = clients.results();
  EXPECT_GT(results.count("1") ? results.at("1") : 0, 0);
  EXPECT_GT(results.count("2") ? results.at("2") : 0, 0);
  spdlog::info("swap under load: {} results of version 1, {} of version 2; idle RSS {} MiB before, {} MiB after",
               results.count("1") ? results.at("1") : 0, results.count("2") ? results.at("2") : 0, rss_before >> 20,
               rss_after >> 20);
  LogSwitchFigures(clients.latencies(), swaps, load_seconds, rss_busy);
  EXPECT_EQ(info.version(), "2");
  EXPECT_EQ(Version(info, "1")->state(), "unloaded");
  EXPECT_LT(rss_after - rss_before, testing::RssBound(kRssSlack))
      << "idle RSS " << (rss_before >> 20) << " MiB before the swaps, " << (rss_after >> 20) << " MiB after";
}

// The same by the repository poll: each swap publishes a new version folder
// as an operator would (the weights copied in two halves, a poll or more
// apart, then the READY marker last), alternately with the two weight files;
// the poll loads it beside the serving one and unloads the old one. No
// request fails, no half-copied folder is loaded, each result equals the
// reference of its version's weights, and the memory is back to its level.
TEST_F(ModelSwapTest, SwapByThePollUnderLoadFailsNothing) {
  namespace fs = std::filesystem;
  const fs::path repo = TempPath("repo");
  fs::remove_all(repo);
  const std::string v2_weights = TempPath("v2.safetensors");
  // Version k: the phantom weights when k is odd, version 2's when even.
  const auto publish = [&](int k, const std::function<void()>& between_halves) {
    const fs::path folder = repo / "ct" / std::to_string(k);
    fs::create_directories(folder);
    auto bytes = imageio::ReadWholeFile(k % 2 ? kPhantomWeights : v2_weights, int64_t{1} << 30);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    if (k % 2 == 0) fs::copy_file(TempPath("plan.json"), folder / kPlanFileName);
    std::ofstream out(folder / kWeightsFileName, std::ios::binary);
    out.write(bytes->data(), static_cast<std::streamsize>(bytes->size() / 2));
    out.flush();
    between_halves();
    out.write(bytes->data() + bytes->size() / 2, static_cast<std::streamsize>(bytes->size() - bytes->size() / 2));
    out.close();
    std::ofstream(folder / kReadyMarker) << "";
  };
  publish(1, [] {});
  server_.reset();
  metrics_port_ = testing::FreePort();
  auto config =
      ParseConfig("listen_address: '127.0.0.1:0'\nmetrics_address: '127.0.0.1:" + std::to_string(metrics_port_) +
                  "'\ncpu_threads: 2\n"
                  "auth { api_keys_file: '" +
                  TempPath("keys.txt") +
                  "' allow_anonymous: true }\n"
                  "batching { max_queue_delay_us: 500 }\n"
                  "model_repository_poll_seconds: 0.1\n"
                  "models { name: 'ct' precision: 'fp32' repository: '" +
                  repo.string() + "' }\n");
  ASSERT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  auto admin = As(kAdminKey);
  const auto serving = [&] { return admin->GetModel("ct")->version(); };
  const auto wait_for_default = [&](int k) {
    for (int i = 0; i < 600 && serving() != std::to_string(k); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return serving() == std::to_string(k);
  };

  std::map<int, std::vector<uint16_t>> reference;  // by weight file: 1 odd, 0 even
  const auto one = Segment(*admin);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->header.model_version(), "1");
  reference[1] = imageio::DecodeRawLabels(one->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS));
  publish(2, [] {});
  ASSERT_TRUE(wait_for_default(2)) << "the poll did not make version 2 the default";
  const auto two = Segment(*admin);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->header.model_version(), "2");
  reference[0] = imageio::DecodeRawLabels(two->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS));
  ASSERT_NE(reference[0], reference[1]) << "the two weight files must be told apart by their labels";
  WaitForOneLiveVersion(*admin);  // version 1 is gone: the level is one version's

  LoadClients clients(
      8, [&] { return As(kUserKey); },
      [&](const std::string& v) {
        const int k = std::atoi(v.c_str());
        return k > 0 ? &reference.at(k % 2) : nullptr;
      });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int64_t rss_before = IdleRss(clients);
  for (int k = 3; k <= 12; ++k) {
    publish(k, [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // polls that see the folder incomplete
      EXPECT_EQ(serving(), std::to_string(k - 1)) << "version " << k << " served before its READY marker";
    });
    EXPECT_TRUE(wait_for_default(k)) << "the poll did not make version " << k << " the default";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const auto info = WaitForOneLiveVersion(*admin);
  const int64_t rss_after = IdleRss(clients);
  clients.Stop();

  for (const auto& p : clients.problems()) ADD_FAILURE() << p;
  int by_file[2] = {0, 0};
  for (const auto& [v, n] : clients.results()) by_file[std::atoi(v.c_str()) % 2] += n;
  EXPECT_GT(by_file[0], 0);
  EXPECT_GT(by_file[1], 0);
  spdlog::info(
      "swap by the poll under load: {} results of the phantom weights, {} of version 2's over {} versions; "
      "idle RSS {} MiB before, {} MiB after",
      by_file[1], by_file[0], clients.results().size(), rss_before >> 20, rss_after >> 20);
  EXPECT_EQ(info.version(), "12");
  for (const auto& v : info.versions())
    if (v.version() != "12") {
      EXPECT_EQ(v.state(), "unloaded") << "version " << v.version();
    }
  EXPECT_LT(rss_after - rss_before, testing::RssBound(kRssSlack))
      << "idle RSS " << (rss_before >> 20) << " MiB before the swaps, " << (rss_after >> 20) << " MiB after";
  fs::remove_all(repo);
}

}  // namespace
}  // namespace upp::server
