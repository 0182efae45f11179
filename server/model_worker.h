// One model instance's worker loop: takes batches from its model's batcher,
// reads their windows from the requests, runs the network and hands each
// window's logits back to its request, until the batcher shuts down.
//
// A worker hands each batch's logits to the stitch pool (the server's CPU
// pool, which must outlive the workers) and runs the next batch meanwhile;
// two logits buffers per worker bound what waits there. Without a pool it
// stitches itself before its next batch.
//
// Threading: Run() on the worker's own thread (the model's, model_registry.h);
// a window that cannot be read, or a batch that fails, fails its requests
// only.
#ifndef UPP_SERVER_MODEL_WORKER_H_
#define UPP_SERVER_MODEL_WORKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/window_runner.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/thread_pool.h"

namespace upp::server {

class ModelWorker {
 public:
  // Owns none of the pointers: `runner`, `batcher`, `metrics` and
  // `stitch_pool` must outlive Run(). `metrics` may be nullptr;
  // `stitch_pool` nullptr: stitch on the worker.
  ModelWorker(std::string model_name, const model::ModelConfig& config, model::WindowRunner* runner, Batcher* batcher,
              Metrics* metrics, ThreadPool* stitch_pool);

  // Returns when the batcher shuts down (after the current batch).
  void Run();

 private:
  // Reads `batch`'s windows into `in`, packed; those that cannot be read
  // fail their requests and are left out of what is returned.
  std::vector<WindowTask> ReadWindows(std::vector<WindowTask> batch, std::vector<float>* in) const;
  // Runs `batch` (read into `in`) into `out`; false when it failed (its
  // requests are told).
  bool RunBatch(const std::vector<WindowTask>& batch, const std::vector<float>& in, std::vector<float>& out);

  std::string name_;
  int64_t in_floats_;   // per window: channels x patch
  int64_t out_floats_;  // per window: classes x patch
  model::WindowRunner* runner_;
  Batcher* batcher_;
  Metrics* metrics_;
  ThreadPool* stitch_pool_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_MODEL_WORKER_H_
