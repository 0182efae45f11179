// The models the server serves: for each, its plan, its batcher and its
// workers (one thread per model instance; instances per device from the
// configuration), loaded and warmed up before the server reports SERVING.
//
// Ownership: the registry owns the models; a model owns its runners, batcher
// and worker threads (each runs a ModelWorker, model_worker.h). Threading:
// Find() from any thread; workers run until Shutdown() (or destruction),
// which stops them after their current batch. The stitch pool (the server's
// CPU pool) must outlive the workers.
#ifndef UPP_SERVER_MODEL_REGISTRY_H_
#define UPP_SERVER_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/window_runner.h"
#include "preprocessing/plan.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/thread_pool.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

class ServedModel {
 public:
  // Loads the weights once per instance, runs one warm-up window on each.
  // `stitch_pool`: where stitching runs; nullptr (or the configuration's
  // batching.stitch_on_worker): on the worker, before its next batch.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const unetrpp::v1::ModelEntry& entry,
                                                           const unetrpp::v1::ServerConfig& config, Metrics* metrics,
                                                           ThreadPool* stitch_pool);
  ~ServedModel();
  void Shutdown();

  const std::string& name() const { return entry_.name(); }
  const unetrpp::v1::ModelEntry& entry() const { return entry_; }
  const preprocessing::Plan& plan() const { return plan_; }
  const model::ModelConfig& config() const { return config_; }
  Batcher& batcher() { return batcher_; }

 private:
  ServedModel(unetrpp::v1::ModelEntry entry, BatcherOptions batching) : entry_(std::move(entry)), batcher_(batching) {}

  unetrpp::v1::ModelEntry entry_;
  preprocessing::Plan plan_;
  model::ModelConfig config_;
  Batcher batcher_;
  std::vector<std::unique_ptr<model::WindowRunner>> runners_;
  std::vector<std::thread> workers_;
};

class ModelRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Load(const unetrpp::v1::ServerConfig& config, Metrics* metrics,
                                                             ThreadPool* stitch_pool);
  ServedModel* Find(const std::string& name) const;  // nullptr if unknown
  const std::map<std::string, std::unique_ptr<ServedModel>>& models() const { return models_; }
  void Shutdown();

 private:
  ModelRegistry() = default;
  std::map<std::string, std::unique_ptr<ServedModel>> models_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_MODEL_REGISTRY_H_
