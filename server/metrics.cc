#include "server/metrics.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace upp::server {
namespace {

using prometheus::BuildGauge;

prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

prometheus::Histogram::BucketBoundaries BatchSizeBuckets() { return {1, 2, 3, 4, 6, 8, 12, 16, 32, 64}; }

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  requests_ = &BuildCounter()
                   .Name("upp_requests_total")
                   .Help("Segment requests by model and gRPC status code")
                   .Register(*registry_);
  request_seconds_ = &BuildHistogram()
                          .Name("upp_request_duration_seconds")
                          .Help("Segment request latency, first message to status")
                          .Register(*registry_);
  stage_seconds_ = &BuildHistogram()
                        .Name("upp_stage_duration_seconds")
                        .Help(
                            "Time per request stage by model (receive, decode, preprocess, queue_wait, inference, "
                            "stitch, postprocess, encode, send)")
                        .Register(*registry_);
  batch_size_ = &BuildHistogram().Name("upp_batch_size_windows").Help("Windows per network call").Register(*registry_);
  batch_seconds_ = &BuildHistogram()
                        .Name("upp_batch_inference_duration_seconds")
                        .Help("Network time per batch")
                        .Register(*registry_);
  windows_ =
      &BuildCounter().Name("upp_windows_processed_total").Help("Windows run through the network").Register(*registry_);
  queued_windows_ = &BuildGauge().Name("upp_queued_windows").Help("Windows waiting for a worker").Register(*registry_);
  model_load_seconds_ = &BuildGauge()
                             .Name("upp_model_load_duration_seconds")
                             .Help("Time to load and warm up a model")
                             .Register(*registry_);
  model_version_ = &BuildGauge()
                        .Name("upp_model_version_info")
                        .Help("A loaded model version: 1 when it is the default, 0 when another ready one")
                        .Register(*registry_);
  bytes_in_ =
      &BuildCounter().Name("upp_received_bytes_total").Help("Input bytes received").Register(*registry_).Add({});
  bytes_out_ = &BuildCounter().Name("upp_sent_bytes_total").Help("Result bytes sent").Register(*registry_).Add({});
  in_flight_ =
      &BuildGauge().Name("upp_requests_in_flight").Help("Segment requests being served").Register(*registry_).Add({});
  orphaned_ = &BuildGauge()
                   .Name("upp_requests_orphaned")
                   .Help("Segment calls ended for their client whose work (decoding, stitching) still runs")
                   .Register(*registry_)
                   .Add({});
  bytes_in_flight_ = &BuildGauge()
                          .Name("upp_admitted_memory_bytes")
                          .Help("Estimated working memory of admitted requests")
                          .Register(*registry_)
                          .Add({});
  device_bytes_in_flight_ = &BuildGauge()
                                 .Name("upp_device_admitted_memory_bytes")
                                 .Help("Estimated GPU memory of the jobs admitted to each job device")
                                 .Register(*registry_);
  jobs_ = &BuildCounter()
               .Name("upp_jobs_total")
               .Help("Segmentation jobs created, by model and the device they live on")
               .Register(*registry_);
  serving_ = &BuildGauge()
                  .Name("upp_serving")
                  .Help("1 while the server takes new requests (health SERVING), 0 while starting or draining")
                  .Register(*registry_)
                  .Add({});
  refusals_ = &BuildCounter()
                   .Name("upp_admission_refusals_total")
                   .Help("Requests and streams refused by admission, by the limit they met")
                   .Register(*registry_);
  for (const std::string& reason : RefusalReasons()) refusals_->Add({{"reason", reason}});
  config_reloads_ = &BuildCounter()
                         .Name("upp_config_reloads_total")
                         .Help("Configuration re-reads (SIGHUP): applied, or invalid and refused")
                         .Register(*registry_);
  for (const char* result : {"applied", "invalid"}) config_reloads_->Add({{"result", result}});
  restart_pending_ = &BuildGauge()
                          .Name("upp_config_restart_pending_changes")
                          .Help("Fields of the configuration last reloaded that take effect only after a restart")
                          .Register(*registry_)
                          .Add({});
  // Requests refused before they name a served model (credentials, an
  // unknown model) count under model "-".
  AddRequestSeries("-");
}

const std::vector<std::string>& Metrics::StageNames() {
  static const std::vector<std::string> names = {"receive", "decode",      "preprocess", "queue_wait", "inference",
                                                 "stitch",  "postprocess", "encode",     "send"};
  return names;
}

const std::vector<std::string>& Metrics::RefusalReasons() {
  static const std::vector<std::string> reasons = {
      "draining",     "concurrent_requests", "caller_requests", "pending_streams", "caller_pending_streams",
      "memory_limit", "memory_in_use",       "caller_memory",   "window_queue",    "caller_windows"};
  return reasons;
}

void Metrics::AdmissionLimits(int64_t concurrent_requests, int64_t bytes, int64_t queued_windows) {
  const auto set = [this](const char* name, const char* help, int64_t value) {
    BuildGauge().Name(name).Help(help).Register(*registry_).Add({}).Set(static_cast<double>(value));
  };
  set("upp_admission_max_concurrent_requests", "Segment requests admitted at once (limits.max_concurrent_requests)",
      concurrent_requests);
  set("upp_admission_max_bytes", "Working memory admitted requests may hold (limits.max_bytes_in_flight)", bytes);
  set("upp_admission_max_queued_windows", "Windows that may wait for a worker (limits.max_queued_windows)",
      queued_windows);
}

void Metrics::AdmissionRefused(const std::string& reason) { refusals_->Add({{"reason", reason}}).Increment(); }

void Metrics::AddRequestSeries(const std::string& model) {
  // Every canonical code: 17 series per model, and a code that a request
  // rarely ends with (DATA_LOSS, INTERNAL) is 0 rather than absent, which is
  // what an alert on it needs.
  for (int code = 0; code <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++code)
    requests_->Add({{"model", model}, {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
  request_seconds_->Add({{"model", model}}, SecondsBuckets());
}

absl::Status Metrics::Expose(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
    exposer_->RegisterCollectable(registry_);
    if (device_memory_) exposer_->RegisterCollectable(device_memory_);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics endpoint ", address, ": ", e.what()));
  }
  return absl::OkStatus();
}

int Metrics::port() const {
  if (!exposer_) return 0;
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::RequestFinished(const std::string& model, const std::string& code, double seconds) {
  requests_->Add({{"model", model}, {"code", code}}).Increment();
  request_seconds_->Add({{"model", model}}, SecondsBuckets()).Observe(seconds);
}

void Metrics::Stage(const std::string& model, const std::string& stage, double seconds) {
  stage_seconds_->Add({{"model", model}, {"stage", stage}}, SecondsBuckets()).Observe(seconds);
}

void Metrics::Batch(const std::string& model, int size, double seconds) {
  batch_size_->Add({{"model", model}}, BatchSizeBuckets()).Observe(size);
  batch_seconds_->Add({{"model", model}}, SecondsBuckets()).Observe(seconds);
  windows_->Add({{"model", model}}).Increment(size);
}

void Metrics::SetQueuedWindows(const std::string& model, int64_t n) {
  queued_windows_->Add({{"model", model}}).Set(static_cast<double>(n));
}

void Metrics::AddDeviceBytesInFlight(const std::string& device, double delta) {
  device_bytes_in_flight_->Add({{"device", device}}).Increment(delta);
}

void Metrics::JobCreated(const std::string& model, const std::string& device) {
  jobs_->Add({{"model", model}, {"device", device}}).Increment();
}

std::optional<int64_t> Metrics::DeviceTotalBytes(const std::string& device) const {
  return device_memory_ ? device_memory_->TotalBytes(device) : std::nullopt;
}

void Metrics::ModelVersion(const std::string& model, const std::string& version, std::optional<bool> is_default) {
  auto& gauge = model_version_->Add({{"model", model}, {"version", version}});
  if (is_default) {
    gauge.Set(*is_default ? 1 : 0);
  } else {
    model_version_->Remove(&gauge);
  }
}

void Metrics::ModelLoaded(const std::string& model, double seconds) {
  model_load_seconds_->Add({{"model", model}}).Set(seconds);
  AddRequestSeries(model);
  for (const std::string& stage : StageNames())
    stage_seconds_->Add({{"model", model}, {"stage", stage}}, SecondsBuckets());
  batch_size_->Add({{"model", model}}, BatchSizeBuckets());
  batch_seconds_->Add({{"model", model}}, SecondsBuckets());
  windows_->Add({{"model", model}});
  queued_windows_->Add({{"model", model}});
}

void Metrics::ConfigReload(bool applied, int64_t restart_pending) {
  config_reloads_->Add({{"result", applied ? "applied" : "invalid"}}).Increment();
  if (applied) restart_pending_->Set(static_cast<double>(restart_pending));
}

void Metrics::CpuInfo(const std::string& isa, bool bf16, bool amx) {
  BuildGauge()
      .Name("upp_cpu_info")
      .Help("CPU instruction set of the model kernels (oneDNN), bfloat16 convolutions and AMX")
      .Register(*registry_)
      .Add({{"isa", isa}, {"bf16", bf16 ? "true" : "false"}, {"amx", amx ? "true" : "false"}})
      .Set(1);
}

bool Metrics::WatchDevices(const std::vector<std::string>& devices) {
  device_memory_ = DeviceMemoryCollector::Create(devices);
  if (device_memory_ && exposer_) exposer_->RegisterCollectable(device_memory_);
  return device_memory_ != nullptr;
}

Metrics::BatchTotals Metrics::Batches(const std::string& model) const {
  BatchTotals totals;
  for (const auto& family : registry_->Collect()) {
    const bool sizes = family.name == "upp_batch_size_windows";
    const bool seconds = family.name == "upp_batch_inference_duration_seconds";
    if (!sizes && !seconds) continue;
    for (const auto& metric : family.metric) {
      bool match = false;
      for (const auto& label : metric.label) match |= label.name == "model" && label.value == model;
      if (!match) continue;
      if (sizes) {
        totals.batches = static_cast<double>(metric.histogram.sample_count);
        totals.windows = metric.histogram.sample_sum;
      } else {
        totals.network_seconds = metric.histogram.sample_sum;
      }
    }
  }
  return totals;
}

}  // namespace upp::server
