// Prometheus metrics of the server (prometheus-cpp), exposed over HTTP at
// /metrics on their own port. Names follow Prometheus conventions: base
// units (seconds, bytes) in the name, `_total` on counters.
//
// Threading: every method is thread-safe (prometheus-cpp metrics are atomic;
// families are created once, under prometheus-cpp's own lock).
#ifndef UPP_SERVER_METRICS_H_
#define UPP_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/device_memory.h"

namespace upp::server {

class Metrics {
 public:
  // Running totals of one model's network calls, read from the registry
  // (for benchmarks and tests that need numbers rather than text).
  struct BatchTotals {
    double batches = 0, windows = 0, network_seconds = 0;
  };

  // The stages of upp_stage_duration_seconds, in the order a request goes
  // through them (queue_wait lies within inference, stitch overlaps it).
  static const std::vector<std::string>& StageNames();
  // The reasons of upp_admission_refusals_total, each a limit of admission.h.
  static const std::vector<std::string>& RefusalReasons();

  Metrics();
  // Serves /metrics on `address` ("host:port"; port 0 picks one).
  absl::Status Expose(const std::string& address);
  int port() const;  // of the exposer, 0 when not exposed

  // `model` is "-" for a request that ended before it named a served model.
  void RequestFinished(const std::string& model, const std::string& code, double seconds);
  // One of StageNames() for a request of `model`.
  void Stage(const std::string& model, const std::string& stage, double seconds);
  void Batch(const std::string& model, int size, double seconds);
  void BytesIn(int64_t n) { bytes_in_->Increment(static_cast<double>(n)); }
  void BytesOut(int64_t n) { bytes_out_->Increment(static_cast<double>(n)); }
  void SetQueuedWindows(const std::string& model, int64_t n);
  void AddInFlight(double delta) { in_flight_->Increment(delta); }
  void AddBytesInFlight(double delta) { bytes_in_flight_->Increment(delta); }
  void AddOrphaned(double delta) { orphaned_->Increment(delta); }
  // The limits admission holds requests to (upp_admission_max_concurrent_requests,
  // upp_admission_max_bytes, upp_admission_max_queued_windows), so that
  // dashboards and alerts can show the gauges above as a share of them.
  void AdmissionLimits(int64_t concurrent_requests, int64_t bytes, int64_t queued_windows);
  // A request or stream refused by admission; `reason` one of RefusalReasons().
  void AdmissionRefused(const std::string& reason);
  // upp_serving: 1 while the health service says SERVING, 0 before and while draining.
  void SetServing(bool serving) { serving_->Set(serving ? 1 : 0); }
  // GPU memory admitted for jobs on `device` (upp_device_admitted_memory_bytes).
  void AddDeviceBytesInFlight(const std::string& device, double delta);
  // A job of `model` created on `device` (upp_jobs_total).
  void JobCreated(const std::string& model, const std::string& device);
  // Also creates the model's request, stage and batch series at zero, so
  // that dashboards (rate(), absent-series alerts) work before the first
  // request and a model that is never called shows as such.
  void ModelLoaded(const std::string& model, double seconds);
  // upp_model_version_info{model, version}: 1 for the default version, 0
  // for another ready one; `is_default` nullopt removes the series, so the
  // label is bounded by the versions loaded at once.
  void ModelVersion(const std::string& model, const std::string& version, std::optional<bool> is_default);
  // A configuration reload (SIGHUP): upp_config_reloads_total{result=
  // "applied"|"invalid"}; upp_config_restart_pending_changes: the fields of
  // the file last applied that wait for a restart (an invalid file leaves
  // it as it was).
  void ConfigReload(bool applied, int64_t restart_pending);
  // upp_cpu_info{isa, bf16, amx} 1: what the CPU kernels dispatch to, so
  // dashboards can tell machines of different kinds apart.
  void CpuInfo(const std::string& isa, bool bf16, bool amx);
  BatchTotals Batches(const std::string& model) const;
  // Adds the device memory gauges of the "cuda:N" devices among `devices`
  // where NVML can be read (device_memory.h); false when none can.
  bool WatchDevices(const std::vector<std::string>& devices);
  // The memory of GPU `device` ("cuda:N") as NVML reports it, where
  // WatchDevices found it; nullopt otherwise.
  std::optional<int64_t> DeviceTotalBytes(const std::string& device) const;

 private:
  // The series of requests of `model` ending with each status code.
  void AddRequestSeries(const std::string& model);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<DeviceMemoryCollector> device_memory_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_seconds_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Histogram>* batch_seconds_;
  prometheus::Family<prometheus::Counter>* windows_;
  prometheus::Family<prometheus::Gauge>* queued_windows_;
  prometheus::Family<prometheus::Gauge>* model_load_seconds_;
  prometheus::Family<prometheus::Gauge>* model_version_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Gauge* in_flight_;
  prometheus::Gauge* bytes_in_flight_;
  prometheus::Gauge* orphaned_;
  prometheus::Gauge* serving_;
  prometheus::Family<prometheus::Counter>* refusals_;
  prometheus::Family<prometheus::Gauge>* device_bytes_in_flight_;
  prometheus::Family<prometheus::Counter>* jobs_;
  prometheus::Family<prometheus::Counter>* config_reloads_;
  prometheus::Gauge* restart_pending_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_METRICS_H_
