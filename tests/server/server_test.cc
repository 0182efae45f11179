// Integration tests: the real server in-process on ephemeral ports, the real
// client library, the synapse-small fixture network. One server for the
// suite (loading and warming up once).
#include "server/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "clients/cpp/client.h"
#include "imageio/dicom.h"
#include "imageio/file_util.h"
#include "imageio/labels.h"
#include "imageio/nifti.h"
#include "inference/job.h"
#include "inference/model_runner.h"
#include "model/cpu_threads.h"
#include "model/device.h"
#include "model/window_runner.h"
#include "server/config.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/temp_path.h"
#include "tests/testing/volumes.h"

namespace upp::server {
namespace {

using client::SegmentOptions;
using unetrpp::v1::OutputKind;

// `plan` as a JSON file in the test's temporary directory; its path.
std::string WritePlanFile(const preprocessing::Plan& plan, const std::string& name) {
  const std::string path = upp::testing::UniqueTempPath(name);
  std::ofstream(path) << plan.ToJson();
  return path;
}

std::string PlanFile() { return testing::SmallPlanFile("server_test_plan.json"); }

// The device of the model and its jobs: $UPP_TEST_DEVICE (e.g. "cuda:0",
// deploy/gpu-check.sh) where set, else the CPU.
std::string TestDevice() {
  const char* device = std::getenv("UPP_TEST_DEVICE");
  return device && *device ? device : "cpu";
}

std::string TestDevices() {
  return TestDevice() == "cpu" ? "" : " devices: '" + TestDevice() + "' job_device: '" + TestDevice() + "'";
}

// Jobs on a GPU get a fixed memory budget unless the test sets one: the
// default (half the device, read through NVML) needs the driver's NVML,
// which deploy/gpu-check.sh's packaged-server step checks instead.
std::string DeviceLimit(const std::string& limits) {
  if (TestDevice() == "cpu" || limits.find("max_device_bytes_in_flight") != std::string::npos) return "";
  return " max_device_bytes_in_flight: 17179869184";
}

std::string ConfigText(const std::string& limits = "max_input_bytes: 33554432") {
  return "listen_address: '127.0.0.1:0'\n"
         "metrics_address: '127.0.0.1:" +
         std::to_string(testing::FreePort()) +
         "'\n"
         "cpu_threads: 2\n"
         "limits { " +
         limits + DeviceLimit(limits) +
         " }\n"
         "batching { max_batch_size: 4 max_queue_delay_us: 20000 }\n"
         "models { name: 'small' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" +
         PlanFile() + "'" + TestDevices() +
         // fp32 on every CPU: DirectLabels is fp32, and bf16 is the default
         // on AMX and Zen 5 (model::DefaultPrecision).
         " precision: 'fp32' }\n";
}

// The lines logged while it is attached to the suite's log (LogLines).
class LinesSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    lines_.emplace_back(line.data(), line.size());
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ConfigureCpuThreads(0);
    // The process's log goes to stdout through a sink that tests attach
    // their own sinks to (dist_sink adds and removes under its lock, while
    // the server's threads log).
    log_ = std::make_shared<spdlog::sinks::dist_sink_mt>();
    log_->add_sink(std::make_shared<spdlog::sinks::stdout_sink_mt>());
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("server-test", log_));
    auto config = ParseConfig(ConfigText());
    ASSERT_TRUE(config.ok()) << config.status();
    auto server = Server::Create(*config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    metrics_at_start_ = new std::string(testing::HttpGet(server_->metrics_port(), "/metrics"));
    client_ = client::Client::Connect("127.0.0.1:" + std::to_string(server_->port())).release();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
    delete metrics_at_start_;
  }
  static Server* server_;
  static client::Client* client_;
  static std::string* metrics_at_start_;  // scraped before any request
  static std::shared_ptr<spdlog::sinks::dist_sink_mt> log_;
};
Server* ServerTest::server_ = nullptr;
client::Client* ServerTest::client_ = nullptr;
std::string* ServerTest::metrics_at_start_ = nullptr;
std::shared_ptr<spdlog::sinks::dist_sink_mt> ServerTest::log_;

// `sink` attached to `log` while in scope.
class LogLines {
 public:
  LogLines(std::shared_ptr<spdlog::sinks::dist_sink_mt> log, std::unique_ptr<spdlog::formatter> formatter)
      : log_(std::move(log)), sink_(std::make_shared<LinesSink>()) {
    if (formatter) sink_->set_formatter(std::move(formatter));
    log_->add_sink(sink_);
  }
  ~LogLines() { log_->remove_sink(sink_); }
  // The first line that holds `text`, waiting up to 10 s for it (a request's
  // line is logged when the server finishes its call, just after the client
  // has the status); "" if none.
  std::string WaitFor(const std::string& text) const {
    for (int i = 0; i < 100; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (const std::string& line : sink_->Lines())
        if (line.find(text) != std::string::npos) return line;
    }
    return "";
  }
  std::vector<std::string> Lines() const { return sink_->Lines(); }

 private:
  std::shared_ptr<spdlog::sinks::dist_sink_mt> log_;
  std::shared_ptr<LinesSink> sink_;
};

// The labels that calling the pipeline directly gives for `volume` with the
// given network and plan file.
std::vector<uint16_t> DirectLabels(imageio::Volume volume, const std::string& weights, const std::string& plan_file) {
  auto runner = model::WindowRunner::FromWeightsFile(weights);
  EXPECT_TRUE(runner.ok());
  auto plan = preprocessing::Plan::FromJson(imageio::ReadWholeFile(plan_file).value_or(""));
  EXPECT_TRUE(plan.ok());
  auto labels = inference::SegmentVolume(std::move(volume), *plan, inference::RunnerFor(**runner), 1);
  EXPECT_TRUE(labels.ok()) << labels.status();
  return labels.ok() ? labels->labels : std::vector<uint16_t>{};
}

std::vector<uint16_t> DirectLabels(imageio::Volume volume) {
  return DirectLabels(std::move(volume), UPP_FIXTURES_DIR "/synapse_small_weights.safetensors", PlanFile());
}

std::vector<uint16_t> DirectLabels(const std::string& nifti) {
  auto image = imageio::ReadNifti(nifti);
  EXPECT_TRUE(image.ok());
  return DirectLabels(std::move(image->volume));
}

double Agreement(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  if (a.size() != b.size() || a.empty()) return 0;
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / a.size();
}

TEST_F(ServerTest, HealthModelsAndReflection) {
  EXPECT_TRUE(client_->Healthy("").value_or(false));
  EXPECT_TRUE(client_->Healthy("unetrpp.v1.Segmentation").value_or(false));
  EXPECT_TRUE(client_->Healthy(Server::ModelHealthName("small")).value_or(false));
  EXPECT_EQ(client_->Healthy("no-such-service").status().code(), absl::StatusCode::kNotFound);
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->default_model(), "small");
  EXPECT_EQ(models->models(0).labels_size(), 14);
  EXPECT_EQ(models->models(0).labels(6).name(), "liver");
  auto info = client_->GetModel("small");
  ASSERT_TRUE(info.ok());
  EXPECT_NE(info->plan_json().find("\"target_spacing\":[2.0,2.0,2.0]"), std::string::npos) << info->plan_json();
  EXPECT_EQ(client_->GetModel("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, NiftiRoundTripEqualsThePipeline) {
  const std::string nifti = testing::FloatNifti(testing::Phantom({61, 57, 23}, {1.6, 1.6, 3.0}));
  SegmentOptions options;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS, unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  options.client_request_id = "round-trip-1";
  std::vector<unetrpp::v1::Progress> progress;
  auto result = client_->Segment({nifti}, options, [&](const auto& p) { progress.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->server_request_id.empty());
  EXPECT_EQ(result->summary.client_request_id(), "round-trip-1");
  EXPECT_FALSE(progress.empty());
  const auto& g = result->header.geometry();
  ASSERT_EQ(g.size_size(), 3);
  EXPECT_EQ(g.size(0), 61);
  EXPECT_EQ(g.size(2), 23);
  EXPECT_DOUBLE_EQ(g.spacing(2), 3.0);
  uint64_t voxels = 0;
  for (const auto& v : result->header.volumes()) voxels += v.voxels();
  EXPECT_EQ(voxels, 61u * 57 * 23);

  const auto raw = imageio::DecodeRawLabels(result->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]);
  // The NIfTI output holds the same labels with the input's geometry.
  auto labels_file = imageio::ReadNifti(result->outputs[unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS]);
  ASSERT_TRUE(labels_file.ok()) << labels_file.status();
  auto input = imageio::ReadNifti(nifti);
  EXPECT_EQ(labels_file->volume.geometry.size, input->volume.geometry.size);
  EXPECT_EQ(labels_file->volume.geometry.spacing, input->volume.geometry.spacing);
  for (size_t i = 0; i < raw.size(); ++i) ASSERT_EQ(labels_file->volume.voxels[i], raw[i]);
  // And they are the pipeline's labels (batching may reorder float sums).
  EXPECT_GE(Agreement(raw, DirectLabels(nifti)), 0.9999);
}

TEST_F(ServerTest, DicomRoundTripWithSeg) {
  auto series = testing::CtSeries(6);
  if (series.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  SegmentOptions options;
  options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS, unetrpp::v1::OUTPUT_KIND_DICOM_SEG};
  options.chunk_bytes = 10000;  // several chunks per instance
  auto result = client_->Segment(series, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->header.geometry().size(2), 6);
  EXPECT_EQ(result->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS].size(), 128u * 128 * 6 * 2);
  auto direct = imageio::ReadDicomSeries(std::vector<std::string_view>(series.begin(), series.end()));
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_GE(Agreement(imageio::DecodeRawLabels(result->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]),
                      DirectLabels(std::move(direct->volume))),
            0.9999);
  const std::string& seg = result->outputs[unetrpp::v1::OUTPUT_KIND_DICOM_SEG];
  ASSERT_GT(seg.size(), 132u);
  EXPECT_EQ(seg.substr(128, 4), "DICM");
  // A SEG for a NIfTI input is refused up front.
  options.format = unetrpp::v1::INPUT_FORMAT_NIFTI;
  EXPECT_EQ(client_->Segment({"x"}, options).status().code(), absl::StatusCode::kInvalidArgument);
}

// A folder of two patients, or of two series of one study, is never
// segmented as one of them silently; the result says what it segmented.
TEST_F(ServerTest, DicomOfTwoPatientsOrTwoSeriesIsNotSegmentedSilently) {
  const std::string study = "1.2.826.0.1.3680043.8.498.77";
  auto first = testing::CtSeries(4, {study, study + ".1", "PATIENT-ONE", ""});
  auto second = testing::CtSeries(2, {study, study + ".2", "PATIENT-ONE", ""});
  auto other = testing::CtSeries(3, {study, study + ".3", "PATIENT-TWO", ""});
  if (first.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  SegmentOptions options;
  options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  const auto concat = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };

  auto mixed = client_->Segment(concat(first, other), options);
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kFailedPrecondition) << mixed.status();
  EXPECT_NE(std::string(mixed.status().message()).find("2 patients"), std::string::npos) << mixed.status();
  EXPECT_EQ(std::string(mixed.status().message()).find("PATIENT"), std::string::npos) << mixed.status();

  auto two_series = client_->Segment(concat(first, second), options);
  EXPECT_EQ(two_series.status().code(), absl::StatusCode::kFailedPrecondition) << two_series.status();
  EXPECT_NE(std::string(two_series.status().message()).find("2 image series of one study"), std::string::npos)
      << two_series.status();

  options.series_instance_uid = study + ".1";
  auto named = client_->Segment(concat(first, second), options);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->header.geometry().size(2), 4);
  const auto& input = named->header.input();
  EXPECT_EQ(input.series_instance_uid(), study + ".1");
  EXPECT_EQ(input.instances_used(), 4u);
  ASSERT_EQ(input.skipped_size(), 1);
  EXPECT_EQ(input.skipped(0).reason(), "another series");
  EXPECT_EQ(input.skipped(0).count(), 2u);

  // Named or not, a series the model does not take (an MR for a CT model)
  // is refused.
  auto mr = testing::CtSeries(3, {study, study + ".4", "PATIENT-ONE", "MR"});
  options.series_instance_uid = study + ".4";
  auto wrong_modality = client_->Segment(concat(first, mr), options);
  EXPECT_EQ(wrong_modality.status().code(), absl::StatusCode::kFailedPrecondition) << wrong_modality.status();

  // A UID with a space or of more than 64 characters is refused before any
  // input is read.
  options.series_instance_uid = "PATIENT ONE";
  EXPECT_EQ(client_->Segment(first, options).status().code(), absl::StatusCode::kInvalidArgument);

  // A text file among the instances is named for what it is.
  options.series_instance_uid.clear();
  auto text = client_->Segment(concat(first, {"export notes\n" + std::string(300, 'x')}), options);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(text.status().message()).find("file #5 is not a DICOM file"), std::string::npos)
      << text.status();
}

TEST_F(ServerTest, ConcurrentClientsAllSucceedAndBatchesForm) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 8; ++i)
    inputs.push_back(testing::FloatNifti(testing::Phantom({40 + 9 * i, 50 + 5 * i, 20 + 3 * i}, {2.0, 2.0, 2.0})));
  std::vector<absl::StatusOr<client::SegmentResult>> results(8, absl::UnknownError(""));
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      SegmentOptions o;
      o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
      results[i] = client_->Segment({inputs[i]}, o);
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << " " << results[i].status();
    EXPECT_GE(Agreement(imageio::DecodeRawLabels(results[i]->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]),
                        DirectLabels(inputs[i])),
              0.9999)
        << i;
  }
  const std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  // Batches of more than one window happened: the count of batches is
  // larger than the count in the le="1" bucket.
  const double ones = testing::MetricValue(metrics, "upp_batch_size_windows_bucket{model=\"small\",le=\"1\"}");
  const double batches = testing::MetricValue(metrics, "upp_batch_size_windows_count{model=\"small\"}");
  EXPECT_GT(batches, ones) << metrics;
}

// A CT whose body fills a corner of its field: only the windows that touch
// the body run (the plan's body crop); the summary counts the others and
// says why, and their voxels come back as background.
TEST_F(ServerTest, WindowsOutsideTheBodyAreSkippedAndCounted) {
  const auto corner = testing::VolumeFrom({160, 160, 40}, {2.0, 2.0, 2.0}, [](int64_t x, int64_t y, int64_t) {
    return x < 30 && y < 30 ? 40.0f : -1000.0f;
  });
  SegmentOptions o;
  o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  auto r = client_->Segment({testing::FloatNifti(corner)}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& summary = r->summary;
  EXPECT_GT(summary.windows_skipped(), summary.windows()) << summary.ShortDebugString();
  EXPECT_GT(summary.windows(), 0u);
  EXPECT_EQ(summary.windows_skipped_reason(), "outside the body");
  const std::string& raw = r->outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  ASSERT_EQ(raw.size(), 160u * 160 * 40 * 2);
  uint16_t far_corner = 1;
  std::memcpy(&far_corner, raw.data() + raw.size() - 2, 2);  // x = y = 159: far from the body
  EXPECT_EQ(far_corner, 0);
}

TEST_F(ServerTest, JobsLiveOnTheJobDeviceAndGiveItsMemoryBack) {
  auto r = client_->Segment({testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}))}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  const std::string device = TestDevice();
  EXPECT_GE(testing::MetricValue(metrics, "upp_jobs_total{device=\"" + device + "\",model=\"small\"}"), 1) << metrics;
  if (device != "cpu") {
    EXPECT_EQ(metrics.find("upp_jobs_total{device=\"cpu\""), std::string::npos) << metrics;  // none fell back
    EXPECT_EQ(testing::MetricValue(metrics, "upp_device_admitted_memory_bytes{device=\"" + device + "\"}"), 0);
  }
}

TEST_F(ServerTest, BadRequestsGetTheirCodesWhileOthersSucceed) {
  const std::string good = testing::FloatNifti(testing::Phantom({50, 50, 30}, {2.0, 2.0, 2.0}));
  std::atomic<bool> good_ok{false};
  std::thread concurrent([&] {
    SegmentOptions o;
    good_ok = client_->Segment({good}, o).ok();
  });

  auto stub = unetrpp::v1::Segmentation::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  auto run = [&](const std::vector<unetrpp::v1::SegmentRequest>& messages, bool writes_done = true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return upp::testing::SegmentRaw(*stub, context, messages, writes_done);
  };
  unetrpp::v1::SegmentRequest header, chunk, end;
  header.mutable_header()->set_model("small");
  header.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
  chunk.mutable_chunk()->set_data(good);
  end.mutable_end();

  auto s = run({chunk, header, end});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("before the RequestHeader"), std::string::npos) << s.error_message();
  s = run({header, header, chunk, end});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("second RequestHeader"), std::string::npos);
  s = run({header, chunk});  // no EndOfInput
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("before EndOfInput"), std::string::npos);
  s = run({header, end});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  unetrpp::v1::SegmentRequest unknown = header;
  unknown.mutable_header()->set_model("no-such-model");
  s = run({unknown, chunk, end});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  unetrpp::v1::SegmentRequest corrupt;
  corrupt.mutable_chunk()->set_data(good.substr(0, 400));  // truncated NIfTI
  s = run({header, corrupt, end});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  // Oversized: more than limits.max_input_bytes (32 MiB) in 3 MiB chunks.
  std::vector<unetrpp::v1::SegmentRequest> big{header};
  unetrpp::v1::SegmentRequest junk;
  junk.mutable_chunk()->set_data(std::string(3 << 20, 'x'));
  for (int i = 0; i < 12; ++i) big.push_back(junk);
  big.push_back(end);
  s = run(big);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  // Announced as oversized: refused at the header.
  unetrpp::v1::SegmentRequest announced = header;
  announced.mutable_header()->set_expected_input_bytes(uint64_t{1} << 40);
  s = run({announced});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  concurrent.join();
  EXPECT_TRUE(good_ok.load());
}

TEST_F(ServerTest, CancellationAndDeadlinesReachTheQueue) {
  // ~216 windows: long enough to cancel in the middle of inference.
  const std::string big = testing::FloatNifti(testing::Phantom({200, 200, 100}, {2.0, 2.0, 2.0}));
  auto stub = unetrpp::v1::Segmentation::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    auto stream = stub->Segment(&context);
    unetrpp::v1::SegmentRequest m;
    m.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
    ASSERT_TRUE(stream->Write(m));
    for (size_t off = 0; off < big.size(); off += 3 << 20) {
      m.mutable_chunk()->set_data(big.substr(off, 3 << 20));
      ASSERT_TRUE(stream->Write(m));
    }
    m.mutable_end();
    ASSERT_TRUE(stream->Write(m));
    unetrpp::v1::SegmentResponse r;
    bool inference = false;
    while (stream->Read(&r))
      if (r.has_progress() && r.progress().stage() == unetrpp::v1::STAGE_INFERENCE &&
          r.progress().windows_total() > 0) {
        inference = true;
        break;
      }
    ASSERT_TRUE(inference);
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {  // cancel during upload
    grpc::ClientContext context;
    auto stream = stub->Segment(&context);
    unetrpp::v1::SegmentRequest m;
    m.mutable_header()->set_format(unetrpp::v1::INPUT_FORMAT_NIFTI);
    ASSERT_TRUE(stream->Write(m));
    m.mutable_chunk()->set_data(big.substr(0, 1 << 20));
    ASSERT_TRUE(stream->Write(m));
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {  // deadline
    SegmentOptions o;
    o.deadline = absl::Milliseconds(1500);
    EXPECT_EQ(client_->Segment({big}, o).status().code(), absl::StatusCode::kDeadlineExceeded);
  }
  // The cancelled windows left the queue: a small request is served at once.
  const auto start = absl::Now();
  auto small = client_->Segment({testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}))}, {});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  // Nothing is left queued or in flight.
  const std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_EQ(testing::MetricValue(metrics, "upp_queued_windows{model=\"small\"}"), 0) << metrics;
  // The client saw CANCELLED twice (above); the server counts at least the
  // one during inference as such (a cancel during upload may reach it as a
  // broken stream first).
  EXPECT_GE(testing::MetricValue(metrics, "upp_requests_total{code=\"CANCELLED\",model=\"small\"}"), 1) << metrics;
  EXPECT_GE(testing::MetricValue(metrics, "upp_requests_total{code=\"DEADLINE_EXCEEDED\",model=\"small\"}"), 1);
  EXPECT_GT(testing::MetricValue(metrics, "upp_stage_duration_seconds_count{model=\"small\",stage=\"preprocess\"}"), 0);
  EXPECT_NE(metrics.find("upp_request_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.find("upp_received_bytes_total"), std::string::npos);
  EXPECT_NE(metrics.find("upp_model_load_duration_seconds{model=\"small\"}"), std::string::npos);
}

// Dashboards and rate() work from the start: each served model's series
// exist at zero before its first request (and "-", requests refused before
// they name a model).
TEST_F(ServerTest, MetricsHaveEachModelsSeriesBeforeTheFirstRequest) {
  const std::string& m = *metrics_at_start_;
  for (const char* code :
       {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL"})
    EXPECT_EQ(testing::MetricValue(m, std::string("upp_requests_total{code=\"") + code + "\",model=\"small\"}"), 0)
        << code << "\n"
        << m;
  EXPECT_EQ(testing::MetricValue(m, "upp_requests_total{code=\"UNAUTHENTICATED\",model=\"-\"}"), 0);
  EXPECT_EQ(testing::MetricValue(m, "upp_request_duration_seconds_count{model=\"small\"}"), 0);
  for (const std::string& stage : Metrics::StageNames())
    EXPECT_EQ(testing::MetricValue(m, "upp_stage_duration_seconds_count{model=\"small\",stage=\"" + stage + "\"}"), 0)
        << stage;
  EXPECT_EQ(m.find("upp_stage_duration_seconds_count{stage="), std::string::npos);  // every one has its model
  EXPECT_EQ(testing::MetricValue(m, "upp_batch_size_windows_count{model=\"small\"}"), 0);
  EXPECT_EQ(testing::MetricValue(m, "upp_windows_processed_total{model=\"small\"}"), 0);
  EXPECT_EQ(testing::MetricValue(m, "upp_queued_windows{model=\"small\"}"), 0);
}

// A stream its client resets before sending a header asked for nothing: no
// info line and no audit record (an HTTP/2 rapid-reset flood would write two
// per stream); requests still get both.
TEST_F(ServerTest, AStreamResetBeforeItsHeaderLeavesNoLogLine) {
  const LogLines text(log_, nullptr);
  auto stub = unetrpp::v1::Segmentation::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    auto stream = stub->Segment(&context);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server has made its reactor
    context.TryCancel();
    unetrpp::v1::SegmentResponse r;
    while (stream->Read(&r)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  SegmentOptions o;
  o.client_request_id = "after-resets";
  ASSERT_TRUE(client_->Segment({testing::FloatNifti(testing::Phantom({30, 30, 10}, {2.0, 2.0, 2.0}))}, o).ok());
  ASSERT_FALSE(text.WaitFor("client_id=after-resets ").empty());
  ASSERT_FALSE(text.WaitFor("audit {").empty());
  for (const std::string& line : text.Lines()) EXPECT_EQ(line.find("CANCELLED"), std::string::npos) << line;
}

// One line per finished request with every stage the metrics have; a failed
// one with the message the client got; in JSON mode the fields are the
// record's members.
TEST_F(ServerTest, RequestLogLinesHaveEveryStageAndAFailuresMessage) {
  const LogLines text(log_, nullptr);
  const LogLines json(log_, JsonLogFormatter());
  const std::string nifti = testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}));
  SegmentOptions o;
  o.client_request_id = "log-line-ok";
  ASSERT_TRUE(client_->Segment({nifti}, o).ok());
  o.client_request_id = "log-line-bad";
  const auto bad = client_->Segment({nifti.substr(0, 400)}, o);  // a truncated NIfTI
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  const std::string message(bad.status().message());
  ASSERT_FALSE(message.empty());

  const std::string ok_line = text.WaitFor("client_id=log-line-ok ");
  for (const std::string& stage : Metrics::StageNames())
    EXPECT_TRUE(ok_line.find(" " + stage + "=") != std::string::npos ||
                ok_line.find("[" + stage + "=") != std::string::npos)
        << stage << ": " << ok_line;
  EXPECT_NE(ok_line.find(" peer=127.0.0.1 "), std::string::npos) << ok_line;
  EXPECT_NE(ok_line.find(" status=OK"), std::string::npos) << ok_line;
  const std::string bad_line = text.WaitFor("client_id=log-line-bad ");
  EXPECT_NE(bad_line.find(" status=INVALID_ARGUMENT: " + message), std::string::npos) << bad_line;

  const auto ok = nlohmann::json::parse(json.WaitFor(R"("client_request_id":"log-line-ok")"), nullptr, false);
  ASSERT_TRUE(ok.is_object()) << "not a JSON line";
  EXPECT_EQ(ok["message"], "request finished");
  EXPECT_EQ(ok["level"], "info");
  EXPECT_EQ(ok["model"], "small");
  EXPECT_EQ(ok["peer"], "127.0.0.1");
  EXPECT_EQ(ok["status"], "OK");
  EXPECT_EQ(ok.count("status_message"), 0u);
  EXPECT_EQ(ok["voxels"], 40 * 40 * 20);
  EXPECT_GT(ok["windows"].get<int64_t>(), 0);
  EXPECT_TRUE(ok["request_id"].is_string());
  EXPECT_TRUE(ok["seconds"].is_number());
  for (const std::string& stage : Metrics::StageNames())
    EXPECT_TRUE(ok["stage_seconds"].contains(stage) && ok["stage_seconds"][stage].is_number()) << stage << ": " << ok;
  const auto failed = nlohmann::json::parse(json.WaitFor(R"("client_request_id":"log-line-bad")"), nullptr, false);
  ASSERT_TRUE(failed.is_object()) << "not a JSON line";
  EXPECT_EQ(failed["status"], "INVALID_ARGUMENT");
  EXPECT_EQ(failed["status_message"], message);
  EXPECT_TRUE(failed["stage_seconds"].contains("receive")) << failed;
  // Without auth.audit_log_file the audit records go to this log, as objects.
  const auto audit = nlohmann::json::parse(
      json.WaitFor(R"("request_id":")" + ok["request_id"].get<std::string>() + R"(","seconds")"), nullptr, false);
  ASSERT_TRUE(audit.is_object()) << "no audit line";
  EXPECT_EQ(audit["message"], "audit");
  EXPECT_EQ(audit["audit"]["method"], "Segment");
  EXPECT_EQ(audit["audit"]["peer"], "127.0.0.1");
}

// The default hands stitching to the CPU pool (ServerTest above); a worker
// that stitches itself gives the same labels.
TEST(StitchTest, StitchingOnTheWorkerGivesThePipelinesLabels) {
  std::string text = ConfigText();
  const std::string batching = "max_queue_delay_us: 20000";
  text.replace(text.find(batching), batching.size(), batching + " stitch_on_worker: true");
  auto config = ParseConfig(text);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->batching().stitch_on_worker());
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = client::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  const std::string nifti = testing::FloatNifti(testing::Phantom({61, 57, 23}, {1.6, 1.6, 3.0}));
  SegmentOptions options;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  auto result = client->Segment({nifti}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  const auto raw = imageio::DecodeRawLabels(result->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]);
  EXPECT_GE(Agreement(raw, DirectLabels(nifti)), 0.9999);
}

TEST(AdmissionTest, WorkingMemoryOverTheLimitIsRefusedWithARetryHint) {
  // 32 MiB of admitted working memory: a 200 x 200 x 100 volume needs ~250.
  // The caller may use all of it (the server-wide limit is what is tested).
  auto config = ParseConfig(
      ConfigText("max_bytes_in_flight: 33554432 max_input_bytes: 33554432 per_caller { max_bytes: 33554432 }"));
  ASSERT_TRUE(config.ok()) << config.status();
  config->set_metrics_address("off");
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  auto big = c->Segment({testing::FloatNifti(testing::Phantom({200, 200, 100}, {2.0, 2.0, 2.0}))}, {});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("working memory"), std::string::npos) << big.status();
  // A small one fits, and the refused one left nothing reserved behind.
  EXPECT_TRUE(c->Segment({testing::FloatNifti(testing::Phantom({30, 30, 10}, {2.0, 2.0, 2.0}))}, {}).ok());
  EXPECT_TRUE(c->Segment({testing::FloatNifti(testing::Phantom({30, 30, 10}, {2.0, 2.0, 2.0}))}, {}).ok());
}

// A GPU job device is checked at start; where there is one, jobs that do not
// fit its memory budget run on the CPU instead of being refused.
TEST(JobDeviceTest, CheckedAtStartAndFullDevicesSendJobsToTheCpu) {
  const std::string text = ConfigText("max_input_bytes: 33554432 max_device_bytes_in_flight: 1") +
                           "models { name: 'gpu_jobs' weights: '" UPP_FIXTURES_DIR
                           "/synapse_small_weights.safetensors' plan_file: '" +
                           PlanFile() + "' job_device: 'cuda:0' }\n";
  auto config = ParseConfig(text);
  ASSERT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  if (!model::DeviceAvailable({true, 0})) {
    ASSERT_FALSE(server.ok());
    EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(server.status().message().find("job_device \"cuda:0\""), std::string::npos) << server.status();
    return;
  }
  ASSERT_TRUE(server.ok()) << server.status();
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  SegmentOptions o;
  o.model = "gpu_jobs";
  const std::string nifti = testing::FloatNifti(testing::Phantom({40, 40, 20}, {2.0, 2.0, 2.0}));
  auto r = c->Segment({nifti}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string metrics = testing::HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_EQ(testing::MetricValue(metrics, "upp_jobs_total{device=\"cpu\",model=\"gpu_jobs\"}"), 1) << metrics;
}

TEST(TlsTest, ServesOverTlsAndRefusesPlaintext) {
  // A self-signed certificate for "localhost", made with the openssl tool.
  const std::string dir = ::testing::TempDir();
  const std::string key = dir + "/tls_test.key", cert = dir + "/tls_test.pem";
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost -days 1 -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl is not installed";
  auto config = ParseConfig(ConfigText() + "tls { cert_file: '" + cert + "' key_file: '" + key + "' }\n");
  ASSERT_TRUE(config.ok()) << config.status();
  config->set_metrics_address("off");
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  std::ifstream in(cert);
  std::stringstream pem;
  pem << in.rdbuf();
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = pem.str();
  const std::string target = "localhost:" + std::to_string((*server)->port());
  client::Client secure(grpc::CreateChannel(target, grpc::SslCredentials(tls)));
  auto models = secure.ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->models_size(), 1);
  client::Client plain(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(plain.ListModels().ok());
}

// A 4-channel model (the BraTS-shaped "tumor" fixture, z-score per channel
// inside the non-zero mask) takes one NIfTI per channel or one 4-D NIfTI.
TEST(MultiChannelTest, OneFilePerChannelOrOne4dFile) {
  preprocessing::Plan plan = preprocessing::DefaultCtPlan(4, {64, 64, 64}, 4);
  for (auto& n : plan.normalization) {
    n.scheme = preprocessing::ChannelNormalization::Scheme::kZScore;
    n.use_nonzero_mask = true;
  }
  plan.target_spacing = {2.0, 2.0, 2.0};
  const std::string plan_file = WritePlanFile(plan, "server_test_tumor_plan.json");
  const std::string weights = UPP_FIXTURES_DIR "/tumor_small_weights.safetensors";
  auto config = ParseConfig(
      "listen_address: '127.0.0.1:0'\nmetrics_address: 'off'\ncpu_threads: 2\n"
      "models { name: 'tumor' modality: 'MR' precision: 'fp32' weights: '" +
      weights + "' plan_file: '" + plan_file + "' }\n");
  ASSERT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto c = client::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  auto info = c->GetModel("tumor");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->input_channels(), 4u);

  // Four modalities of one geometry: each channel a differently scaled and
  // shifted copy of the phantom, so that every channel matters.
  const imageio::Volume base = testing::Phantom({70, 60, 40}, {1.5, 1.5, 2.0});
  imageio::Volume four;
  four.geometry = base.geometry;
  four.channels = 4;
  std::vector<std::string> per_channel;
  for (int ch = 0; ch < 4; ++ch) {
    imageio::Volume one;
    one.geometry = base.geometry;
    for (size_t i = 0; i < base.voxels.size(); ++i)
      one.voxels.push_back(base.voxels[i] < -500 ? 0.0f : (1.0f + 0.5f * ch) * base.voxels[i] + 37.0f * ch);
    four.voxels.insert(four.voxels.end(), one.voxels.begin(), one.voxels.end());
    per_channel.push_back(testing::FloatNifti(one));
  }
  SegmentOptions options;
  options.model = "tumor";
  options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  auto separate = c->Segment(per_channel, options);
  ASSERT_TRUE(separate.ok()) << separate.status();
  auto together = c->Segment({testing::FloatNifti(four)}, options);
  ASSERT_TRUE(together.ok()) << together.status();
  const auto labels = imageio::DecodeRawLabels(separate->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]);
  ASSERT_EQ(labels.size(), 70u * 60 * 40);
  EXPECT_EQ(labels, imageio::DecodeRawLabels(together->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]));
  const auto direct = DirectLabels(four, weights, plan_file);
  EXPECT_GE(Agreement(labels, direct), 0.9999);
  // The channels are not interchangeable: swapping two changes the result.
  std::swap(per_channel[0], per_channel[3]);
  auto swapped = c->Segment(per_channel, options);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_LT(Agreement(labels, imageio::DecodeRawLabels(swapped->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS])), 0.9999);
  std::swap(per_channel[0], per_channel[3]);

  // Wrong channel counts and a geometry mismatch are refused with a reason.
  auto three = c->Segment({per_channel[0], per_channel[1], per_channel[2]}, options);
  EXPECT_EQ(three.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(three.status().message().find("4 channel"), std::string::npos) << three.status();
  auto one = c->Segment({per_channel[0]}, options);
  EXPECT_EQ(one.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(one.status().message().find("4 channel"), std::string::npos) << one.status();
  auto five = c->Segment({per_channel[0], per_channel[1], per_channel[2], per_channel[3], per_channel[0]}, options);
  EXPECT_EQ(five.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(five.status().message().find("input_index 4"), std::string::npos) << five.status();
  imageio::Volume shifted;
  shifted.geometry = base.geometry;
  shifted.geometry.spacing[2] = 2.5;
  shifted.voxels = base.voxels;
  auto mismatch = c->Segment({per_channel[0], per_channel[1], testing::FloatNifti(shifted), per_channel[3]}, options);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mismatch.status().message().find("input 2 does not share input 0's geometry"), std::string::npos)
      << mismatch.status();
  // The server still serves after the refusals.
  auto again = c->Segment(per_channel, options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(imageio::DecodeRawLabels(again->outputs[unetrpp::v1::OUTPUT_KIND_RAW_LABELS]), labels);
}

}  // namespace
}  // namespace upp::server
