// The served models and their versions: for each version, its plan, its
// batcher and its workers (one thread per model instance; instances per
// device from the configuration), loaded and warmed up before it serves.
//
// Versions change while serving (issue 29): LoadVersion loads a version
// beside the one serving, warms it up through its own batcher and workers,
// then makes it the default; requests hold a ModelPin on the version they
// began with, so they finish on it; the old version is retired once its
// last pin is gone (its workers stop, its memory returns). Each version has
// its own batcher, so windows of two versions never share a batch. The
// state of every version is a ModelLifecycle (model_lifecycle.h).
//
// Ownership: the registry owns the versions; a version owns its runners,
// batcher and worker threads (each runs a ModelWorker, model_worker.h).
// Threading: Acquire() and Describe() from any thread; LoadVersion() and
// UnloadVersion() block (seconds: loading and warm-up), one at a time, off
// gRPC's threads. Shutdown() (or destruction) stops every worker after its
// current batch. The stitch pool (the server's CPU pool) must outlive the
// workers.
#ifndef UPP_SERVER_MODEL_REGISTRY_H_
#define UPP_SERVER_MODEL_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/config.h"
#include "model/window_runner.h"
#include "preprocessing/plan.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/model_lifecycle.h"
#include "server/model_repository.h"
#include "server/thread_pool.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// One loaded version of a model.
class ServedModel {
 public:
  // Loads the weights once per instance, runs one window on each, starts
  // the workers. `entry`: the version's own (EntryForVersion).
  // `stitch_pool`: where stitching runs; nullptr (or the configuration's
  // batching.stitch_on_worker): on the worker, before its next batch.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const unetrpp::v1::ModelEntry& entry,
                                                           const unetrpp::v1::ServerConfig& config, Metrics* metrics,
                                                           ThreadPool* stitch_pool);
  ~ServedModel();
  // Sends `windows_per_worker` x instances windows through the batcher and
  // the workers (and the stitch pool), so the first request pays nothing.
  absl::Status WarmUp(int windows_per_worker);
  void Shutdown();

  const std::string& name() const { return entry_.name(); }
  const std::string& version() const { return entry_.version(); }
  const unetrpp::v1::ModelEntry& entry() const { return entry_; }
  const preprocessing::Plan& plan() const { return plan_; }
  const model::ModelConfig& config() const { return config_; }
  Batcher& batcher() { return batcher_; }
  const std::string& weights_sha256() const { return weights_sha256_; }
  // What the weights hold in memory, per instance device ("cpu", "cuda:0").
  const std::map<std::string, int64_t>& memory_bytes() const { return memory_bytes_; }

  // Holds of requests on this version (ModelPin).
  void Pin();
  void Unpin();
  // Blocks until no request holds this version (true), or until
  // GiveUpWaiting() (false while some still do).
  bool WaitUnpinned();
  void GiveUpWaiting();

 private:
  ServedModel(unetrpp::v1::ModelEntry entry, BatcherOptions batching) : entry_(std::move(entry)), batcher_(batching) {}
  absl::Status LoadPlan(const model::WindowRunner& first);
  bool DoneWaitingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(pin_mu_);

  unetrpp::v1::ModelEntry entry_;
  preprocessing::Plan plan_;
  model::ModelConfig config_;
  std::string weights_sha256_;
  std::map<std::string, int64_t> memory_bytes_;
  Batcher batcher_;
  std::vector<std::unique_ptr<model::WindowRunner>> runners_;
  std::vector<std::thread> workers_;

  absl::Mutex pin_mu_;
  int64_t pins_ ABSL_GUARDED_BY(pin_mu_) = 0;
  bool give_up_ ABSL_GUARDED_BY(pin_mu_) = false;
};

// A request's hold on one loaded version: the version is not retired while
// it exists. Move-only.
class ModelPin {
 public:
  ModelPin() = default;
  explicit ModelPin(ServedModel* model) : model_(model) {
    if (model_) model_->Pin();
  }
  ModelPin(ModelPin&& other) noexcept : model_(std::exchange(other.model_, nullptr)) {}
  ModelPin& operator=(ModelPin&& other) noexcept;
  ModelPin(const ModelPin&) = delete;
  ModelPin& operator=(const ModelPin&) = delete;
  ~ModelPin() { Reset(); }

  ServedModel* get() const { return model_; }
  ServedModel* operator->() const { return model_; }
  explicit operator bool() const { return model_ != nullptr; }
  void Reset();

 private:
  ServedModel* model_ = nullptr;
};

// What LoadModel asks for (proto LoadModelRequest without gRPC).
struct LoadRequest {
  std::string name;
  std::string version;  // empty: the newest the model's source offers
  bool keep_previous = false;
  bool drain_then_load = false;
};

// One model as ListModels shows it: its versions, and its default pinned so
// that its plan and architecture can be read.
struct ModelDescription {
  std::string name;
  std::vector<VersionRecord> versions;
  std::string default_version;
  ModelPin serving;  // the default; empty when none serves
};

// How the registry checks memory and warms up (tests change them).
struct RegistryOptions {
  // The memory this process may use; 0: AvailableMemoryBytes().
  int64_t host_memory_bytes = 0;
  // The device memory of "cuda:N" devices (tests); unset: from metrics.
  std::function<std::optional<int64_t>(const std::string&)> device_memory_bytes;
  int warmup_windows_per_worker = 2;
};

class ModelRegistry {
 public:
  using Options = RegistryOptions;

  // Every model of `config`, the versions its policy names, the newest of
  // each the default.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Load(const unetrpp::v1::ServerConfig& config, Metrics* metrics,
                                                             ThreadPool* stitch_pool, Options options = Options());
  ~ModelRegistry();

  // A hold on `version` of model `name` (empty: its default) for one
  // request: NOT_FOUND for an unknown model or a version that is not
  // loaded, UNAVAILABLE (with a retry hint) while the model has no version
  // serving or the version is on its way in or out.
  absl::StatusOr<ModelPin> Acquire(const std::string& name, const std::string& version = "") const;
  std::vector<std::string> names() const;
  // The default version of `name` without a hold (nullptr: none); valid
  // only while that version stays loaded: requests use Acquire().
  ServedModel* Find(const std::string& name) const;
  absl::StatusOr<ModelDescription> Describe(const std::string& name) const;

  // Loads a version beside the serving one, warms it up, makes it the
  // default and retires the previous default (unless keep_previous) once its
  // requests are done. A failed load leaves the model as it was and returns
  // why. The versions' memory must fit beside the admission budget
  // (limits.max_bytes_in_flight), else FAILED_PRECONDITION unless
  // drain_then_load. Blocks; one load or unload at a time. UNAVAILABLE once
  // Shutdown began (a load already under way finishes).
  absl::Status LoadVersion(const LoadRequest& request);
  // Stops new requests from getting the version and retires it once its
  // requests are done (in the background).
  absl::Status UnloadVersion(const std::string& name, const std::string& version);
  // Runs `work` (LoadVersion, UnloadVersion and what follows) on the
  // registry's management thread, so that gRPC's threads never wait for a
  // load.
  // After Shutdown it runs `work` on the calling thread.
  void RunManagement(std::function<void()> work);
  // The repository poll: every `interval`, each model served from a
  // repository folder follows what its complete folders and its policy
  // offer (PollOnce). A failed load is reported and does not stop the poll;
  // a failed version is retried by LoadModel, not by the poll.
  void StartPolling(absl::Duration interval);
  // Loads the versions the policy offers that are not loaded (the newest
  // becomes the default), then unloads the ready ones it no longer offers.
  void PollOnce();
  // A re-read configuration (Server::Reload), its live fields only
  // (config_reload.h): each model's version source and policy, followed as
  // the poll follows a repository (a version that failed before is tried
  // again, changed or not); the admission budget CheckMemory counts. Models
  // not in the registry are ignored. Blocks while versions load; once
  // Shutdown began, stops before the next.
  void Reconfigure(const unetrpp::v1::ServerConfig& config);
  // Blocks until every version being retired is gone (tests, benchmarks).
  void WaitRetired();
  // The weights' memory per device ("cpu", "cuda:N") of every version
  // loaded or not yet freed: what CheckMemory counts beside the budget.
  std::map<std::string, int64_t> MemoryBytes() const;
  void Shutdown();

 private:
  struct Model {
    unetrpp::v1::ModelEntry entry;  // as configured: its version source and policy
    ModelLifecycle lifecycle;
    std::map<std::string, std::unique_ptr<ServedModel>> loaded;  // the ready versions
  };
  ModelRegistry(const unetrpp::v1::ServerConfig& config, Metrics* metrics, ThreadPool* stitch_pool, Options options);

  // Loading and warm-up of one version, its states recorded; the version
  // is ready (and the default when `make_default`) when this returns OK.
  absl::Status LoadOne(const unetrpp::v1::ModelEntry& entry, const VersionSpec& spec, bool make_default);
  // FAILED_PRECONDITION when `spec` does not fit beside what is loaded.
  absl::Status CheckMemory(const unetrpp::v1::ModelEntry& entry, const VersionSpec& spec) const;
  // The version `request` names, from the model's source now.
  absl::StatusOr<VersionSpec> Resolve(const LoadRequest& request) const;
  bool Unloading(const std::string& name, const std::string& version) const;
  // Shutdown has begun: LoadVersion refuses, Reconfigure and the poll stop
  // before their next load.
  bool ShuttingDown() const;
  // Ready -> unloading, and a thread that destroys it once unpinned.
  absl::Status RetireLocked(Model& model, const std::string& version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The retiring thread's work: waits for the version's last request,
  // stops its workers and frees it.
  void FinishRetiring(std::unique_ptr<ServedModel> version);
  // The versions of `name` in upp_model_version_info, as they are now.
  void PublishLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One model's poll: what to load and unload. `retry_failed`: a version
  // that failed to load is tried again (a reload), not skipped (the poll).
  void PollModel(const unetrpp::v1::ModelEntry& entry, bool retry_failed = false);
  bool NoneRetiringLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return retiring_.empty(); }
  std::map<std::string, int64_t> MemoryBytesLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const unetrpp::v1::ServerConfig config_;  // as at start: batching, limits_ below
  Metrics* const metrics_;
  ThreadPool* const stitch_pool_;
  const Options options_;

  absl::Mutex manage_mu_;  // one load or unload at a time
  mutable absl::Mutex mu_;
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  unetrpp::v1::Limits limits_ ABSL_GUARDED_BY(mu_);  // config_'s until a Reconfigure
  std::vector<std::thread> retirers_ ABSL_GUARDED_BY(mu_);
  // Versions on their way out, until freed, with the memory they hold
  // (CheckMemory counts it); those of them still waiting for their last
  // request (alive while listed: Shutdown tells them to stop waiting).
  std::map<const ServedModel*, std::map<std::string, int64_t>> retiring_ ABSL_GUARDED_BY(mu_);
  std::set<ServedModel*> waiting_ ABSL_GUARDED_BY(mu_);
  // Versions whose retirement was cut short by Shutdown: destroyed with the
  // registry, after the CPU pool's last tasks (which may still pin them).
  std::vector<std::unique_ptr<ServedModel>> abandoned_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread poller_;  // StartPolling's; stopped by Shutdown
  absl::Duration poll_interval_ ABSL_GUARDED_BY(mu_);
  // Management tasks; Shutdown runs what is queued (their loads refused:
  // LoadVersion) and joins it, before the server's audit log and the
  // versions go.
  absl::Mutex manager_mu_;
  std::unique_ptr<ThreadPool> manager_ ABSL_GUARDED_BY(manager_mu_) = std::make_unique<ThreadPool>(1);
};

}  // namespace upp::server

#endif  // UPP_SERVER_MODEL_REGISTRY_H_
