#include "server/model_worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "tracing/server_tracing.h"

namespace upp::server {
namespace {

// The logits buffers of one worker: it runs each batch into a free one, and
// the stitching task gives it back. Two let the worker run the next batch
// while the last one is stitched, and make it wait when stitching falls
// behind, so that what waits for the CPU pool stays bounded (one batch of
// logits per worker: batch x classes x patch floats).
class LogitsBuffers {
 public:
  explicit LogitsBuffers(int count) : free_(count) {}
  // Blocks until a buffer is free.
  std::vector<float> Take() {
    absl::MutexLock lock(&mu_, absl::Condition(this, &LogitsBuffers::AnyFreeLocked));
    std::vector<float> b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void Give(std::vector<float> b) {
    absl::MutexLock lock(&mu_);
    free_.push_back(std::move(b));
  }

 private:
  bool AnyFreeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !free_.empty(); }
  absl::Mutex mu_;
  std::vector<std::vector<float>> free_ ABSL_GUARDED_BY(mu_);
};

// Hands each window's logits to its request (which stitches them).
void Stitch(const std::vector<WindowTask>& batch, const std::vector<float>& out, int64_t out_floats) {
  for (size_t i = 0; i < batch.size(); ++i) batch[i].source->WindowDone(batch[i].item, out.data() + i * out_floats);
}

// Stitches `out` on this thread (no `stitch_pool`) or schedules it on the
// pool; the buffer goes back to `buffers` either way.
void HandOver(ThreadPool* stitch_pool, std::vector<WindowTask> batch, std::vector<float> out, int64_t out_floats,
              const std::shared_ptr<LogitsBuffers>& buffers) {
  if (!stitch_pool) {
    Stitch(batch, out, out_floats);
    buffers->Give(std::move(out));
    return;
  }
  stitch_pool->Schedule([ok = std::move(batch), out = std::move(out), buffers, out_floats]() mutable {
    // The buffer goes back whatever happens: a lost one would stop the
    // worker for good (the pool logs what escaped).
    try {
      Stitch(ok, out, out_floats);
    } catch (...) {
      buffers->Give(std::move(out));
      throw;
    }
    buffers->Give(std::move(out));
  });
}

// The batch's span, when any request whose windows it carries is traced: a
// trace of its own (a batch belongs to several), linked to each of those
// requests' spans, so that a slow request shows the batches it waited
// behind and with whom it shared them.
tracing::Span StartBatchSpan(const std::vector<WindowTask>& batch) {
  std::vector<std::string> links;
  for (const WindowTask& task : batch) {
    const std::string_view traced = task.source->trace_parent();
    if (!traced.empty() && std::find(links.begin(), links.end(), traced) == links.end()) links.emplace_back(traced);
  }
  if (links.empty()) return tracing::Span();
  const std::shared_ptr<tracing::Tracer> tracer = tracing::CurrentTracer();
  if (!tracer) return tracing::Span();
  tracing::Span span = tracer->StartLinkedSpan("batch", links);
  span.SetAttribute("upp.traced_requests", static_cast<int64_t>(links.size()));
  return span;
}

}  // namespace

ModelWorker::ModelWorker(std::string model_name, const model::ModelConfig& config, model::WindowRunner* runner,
                         Batcher* batcher, Metrics* metrics, ThreadPool* stitch_pool)
    : name_(std::move(model_name)),
      in_floats_(config.in_channels * config.patch[0] * config.patch[1] * config.patch[2]),
      out_floats_(config.num_classes * config.patch[0] * config.patch[1] * config.patch[2]),
      runner_(runner),
      batcher_(batcher),
      metrics_(metrics),
      stitch_pool_(stitch_pool) {}

void ModelWorker::Run() {
  auto buffers = std::make_shared<LogitsBuffers>(stitch_pool_ ? 2 : 1);
  std::vector<float> in;
  for (;;) {
    std::vector<WindowTask> batch = batcher_->NextBatch();
    if (batch.empty()) return;  // shut down
    if (metrics_) metrics_->SetQueuedWindows(name_, batcher_->queued_windows());
    tracing::Span span = StartBatchSpan(batch);  // reading, running; stitching is the requests' own
    const int64_t formed = static_cast<int64_t>(batch.size());
    std::vector<WindowTask> ok = ReadWindows(std::move(batch), &in);
    span.SetAttribute("upp.model", name_);
    span.SetAttribute("upp.batch_size", static_cast<int64_t>(ok.size()));
    span.SetAttribute("upp.windows_unread", formed - static_cast<int64_t>(ok.size()));
    if (ok.empty()) continue;
    std::vector<float> out = buffers->Take();
    out.resize(ok.size() * out_floats_);
    const bool ran = RunBatch(ok, in, out);
    span.SetStatus(ran ? absl::OkStatus() : absl::InternalError("inference failed"));
    span.End();
    if (!ran) {
      buffers->Give(std::move(out));
    } else {
      HandOver(stitch_pool_, std::move(ok), std::move(out), out_floats_, buffers);
    }
  }
}

std::vector<WindowTask> ModelWorker::ReadWindows(std::vector<WindowTask> batch, std::vector<float>* in) const {
  in->resize(batch.size() * in_floats_);
  std::vector<WindowTask> ok;
  for (auto& task : batch) {
    absl::Status s = task.source->ReadWindow(task.item, in->data() + ok.size() * in_floats_);
    if (s.ok()) {
      ok.push_back(std::move(task));
    } else {
      task.source->WindowsFailed(s);
    }
  }
  return ok;
}

bool ModelWorker::RunBatch(const std::vector<WindowTask>& batch, const std::vector<float>& in,
                           std::vector<float>& out) {
  const auto start = std::chrono::steady_clock::now();
  const model::Status s = runner_->Run(in.data(), static_cast<int64_t>(batch.size()), out.data());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (metrics_ && !batch.front().source->warmup()) metrics_->Batch(name_, static_cast<int>(batch.size()), seconds);
  if (s.ok()) return true;
  spdlog::error("model {}: batch of {} failed: {}", name_, batch.size(), s.ToString());
  for (auto& task : batch) task.source->WindowsFailed(absl::InternalError("inference failed"));
  return false;
}

}  // namespace upp::server
