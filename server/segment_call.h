// One Segment call (bidirectional stream): the reactor. It does the
// protocol only: reads the messages (request_validation.h checks them),
// admits the request (admission.h: a Reservation held until the last work for
// the call stops), runs the pipeline's stages on the CPU pool and hands the
// windows to the model's batcher (it is their WindowSource), and gives what
// it has to say to its ResponseWriter (response_writer.h: order, one write
// in flight, the call's end). Domain logic lives in free functions: the job's
// options and cost (job_request.h), timeouts (call_timeouts.h), the log and
// audit record (request_record.h), encoding (result_encoder.h).
//
// Threads: gRPC's threads run the reactions (OnReadDone, OnWriteDone,
// OnCancel, OnDone) and never block: decoding, preprocessing, postprocessing
// and encoding run on the service's CPU pool, windows on the model's workers.
//
// Lifetime: the object holds a reference to itself until OnDone(); pool and
// worker closures hold their own references, so late events after OnDone
// find a live object whose writes are no-ops.
#ifndef UPP_SERVER_SEGMENT_CALL_H_
#define UPP_SERVER_SEGMENT_CALL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "imageio/input_assembly.h"
#include "inference/job.h"
#include "server/admission.h"
#include "server/auth.h"
#include "server/batcher.h"
#include "server/call_stats.h"
#include "server/call_timeouts.h"
#include "server/request_record.h"
#include "server/request_validation.h"
#include "server/response_writer.h"
#include "server/service_state.h"
#include "server/speed_mode.h"
#include "tracing/tracing.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

class SegmentCall : public grpc::ServerBidiReactor<unetrpp::v1::SegmentRequest, unetrpp::v1::SegmentResponse>,
                    public WindowSource,
                    public TimedCall,
                    public std::enable_shared_from_this<SegmentCall> {
 public:
  // Creates the call and starts reading; gRPC owns the returned reactor
  // until OnDone().
  static grpc::ServerBidiReactor<unetrpp::v1::SegmentRequest, unetrpp::v1::SegmentResponse>* Start(
      grpc::CallbackServerContext* context, ServiceState* state);
  ~SegmentCall() override;

  // grpc reactions.
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // WindowSource (worker threads).
  int priority() const override { return priority_; }
  bool Alive() const override;
  absl::Status ReadWindow(int64_t item, float* dst) override;
  void WindowDone(int64_t item, const float* logits) override;
  void WindowsFailed(const absl::Status& status) override;
  std::string_view trace_parent() const override { return trace_parent_; }

  // TimedCall (the watchdog thread): header, upload-idle, send-stall and
  // whole-request timeouts.
  void CheckTimeouts(absl::Time now) override;

 private:
  using Phase = CallState::Phase;
  SegmentCall(grpc::CallbackServerContext* context, ServiceState* state);

  absl::Status HandleHeader(const unetrpp::v1::RequestHeader& header);
  absl::Status HandleChunk(unetrpp::v1::InputChunk& chunk);
  // `fastest` and label subsets: the fastest model runs instead, or first.
  absl::Status UseFastestModel();
  // Decode pool: decode (the readers admit before they allocate), then
  // Prepare on the CPU pool. Decoding has a bounded pool of its own
  // (limits.decode_threads) so that one caller's slow or hostile input
  // cannot hold the CPU threads that stitch and finish everyone's windows.
  void Process();
  absl::StatusOr<imageio::Volume> Decode();
  // CPU pool: the decoded volume (decoded_) checked, admitted, preprocessed
  // and its windows enqueued.
  void Prepare();
  // CPU pool: the job built from the decoded volume, its windows queued on
  // Running()'s batcher (the locator's first for a label subset).
  void Enqueue(imageio::Volume volume);
  void StartJob(imageio::Volume volume, const inference::JobOptions& options);
  // CPU pool, after the locating pass: the full model's job over the box of
  // the requested labels, or the result at once when none was found.
  void AfterLocating(inference::LabelMap located);
  // Whom the per-caller limits count this call against: the principal when
  // authenticated, else the client address.
  Caller CountedAs() const;
  // Called by the readers before decoding: the first time, the window limit
  // and the job's working memory for an input of geometry `g`; every time,
  // `read_bytes` (what decoding this file allocates).
  absl::Status AdmitVolume(const imageio::Geometry& g, int64_t read_bytes);
  // The device the job for an input of geometry `g` lives on: the model's
  // job_device while its GPU memory budget has room for the job's estimate
  // (reserved here, in reservation_), else the CPU.
  std::string PlaceJob(const imageio::Geometry& g, const inference::JobOptions& options);
  // Frees the job, then gives its GPU memory reservation back.
  void ReleaseJob();
  // Runs `work` on `pool`; an exception fails this request only.
  void ScheduleGuarded(ThreadPool& pool, void (SegmentCall::*work)());
  // Ends a call whose client stopped taking part, with `status`; when a
  // write is in flight (it would never complete) the stream is cancelled.
  void Abandon(const absl::Status& status);
  // CPU pool, after the last window: labels, encoding, result messages.
  void Postprocess();
  void SendResult(inference::LabelMap labels);

  // Ends the call with `status` (first caller wins) after the write in flight.
  void Fail(const absl::Status& status);
  void Send(unetrpp::v1::SegmentResponse message) { writer_.Send(std::move(message)); }
  void SendProgress(unetrpp::v1::Stage stage, double fraction, bool force = false);
  // The summary, but for the sending time (the writer adds it).
  unetrpp::v1::SegmentResponse Summary();
  // The writer's stream: a write, and the call's end (trailers, then Finish).
  ResponseWriter::Stream WriterStream();
  void ReleasePendingStream();  // once: the first caller returns the BeginPendingStream slot
  void StageDone(unetrpp::v1::Stage stage, absl::Time since);
  // A child of span_ for a stage that ran from `begin` (recorded when it
  // ends, from the times kept anyway); a label subset's stages say which
  // pass they belong to. End() it at the stage's end.
  tracing::Span StageSpan(std::string_view name, absl::Time begin) const;
  void TraceStage(std::string_view name, absl::Time begin, absl::Time end) const { StageSpan(name, begin).End(end); }
  // The request's log line and audit record (OnDone).
  FinishedRequest Record(const absl::Status& status);
  // Ends span_ with what the record says (OnDone).
  void EndSpan(const FinishedRequest& record);

  grpc::CallbackServerContext* const context_;
  ServiceState* const state_;
  // The configuration in force when the call began, one snapshot for every
  // stage (and the watchdog): a reload meanwhile serves the next calls, so
  // no request mixes old and new limits.
  const std::shared_ptr<const unetrpp::v1::ServerConfig> config_;
  const std::string request_id_;
  const absl::Time start_ = absl::Now();
  const std::string peer_;  // client address without the port
  Principal principal_;     // set in Start, before any reaction
  // A stream's slot until the header arrives or the call's status is
  // decided: whichever thread clears pending_stream_ first releases it.
  std::atomic<bool> pending_stream_{false};
  Reservation pending_;
  std::atomic<int64_t> last_read_ns_;
  std::shared_ptr<SegmentCall> self_;  // released in OnDone
  std::atomic<bool> orphaned_{false};  // OnDone has run: counted by ServiceState::AddOrphaned
  // context_ is valid until OnDone returns; Abandon() uses it from the
  // watchdog thread under this lock (see Abandon).
  std::recursive_mutex context_mu_;
  bool context_done_ = false;  // guarded by context_mu_

  // Read side: touched only by reactions, which gRPC serialises for reads.
  unetrpp::v1::SegmentRequest request_;
  std::atomic<Phase> phase_{Phase::kHeader};  // written by reads, read by the watchdog
  unetrpp::v1::RequestHeader header_;
  // The model version the call runs on, held until the call is destroyed
  // (model_registry.h: the version is not retired before).
  ModelPin pin_;
  // Set once by the header's reaction; read by the pool, workers and the
  // watchdog (Fail through Abandon), hence atomic.
  std::atomic<ServedModel*> model_{nullptr};
  ServedModel* model() const { return model_.load(std::memory_order_acquire); }
  // The request's mode and label subset (speed_mode.h), set with model_.
  SpeedPlan speed_;
  // A label subset's locating pass (speed_.locator_model): while locating_,
  // job_ is the locator's and held_ keeps the input for the second pass.
  ServedModel* locator_ = nullptr;
  ModelPin fastest_pin_;  // the version of locator_ or of a `fastest` model_
  std::atomic<bool> locating_{false};
  std::optional<imageio::Volume> held_;
  ServedModel* Running() const { return locating_.load() ? locator_ : model(); }
  std::optional<InputCollector> collector_;  // from the header on
  // Handed from Process (decode pool) to Prepare (CPU pool): the pool's
  // queue orders the two.
  std::optional<imageio::Volume> decoded_;
  int64_t bytes_received_ = 0;
  int64_t next_receive_progress_ = 0;
  // What the request holds (slot, memory, windows, GPU memory), from its
  // header on: given back by the destructor, once nothing works for the call
  // any more (the pool's tasks and the batcher hold the call), or in parts
  // as the work needs less. Used by the reactions until the input is
  // complete, then by the pool and workers, never by two at once.
  Reservation reservation_;

  // Processing (pool and workers).
  int priority_ = 0;
  absl::Time deadline_ = absl::InfiniteFuture();
  std::atomic<bool> alive_{true};
  std::unique_ptr<inference::SegmentationJob> job_;
  bool estimate_reserved_ = false;   // the job's working memory is in reservation_
  imageio::InputDescription input_;  // what decoding found, for encoding and the summary
  std::atomic<bool> first_window_{true};
  absl::Time enqueued_at_;
  std::atomic<int64_t> last_progress_ns_{0};
  // The call's server span (tracing/), continuing the caller's traceparent;
  // not recording when tracing is off. Ended by OnDone.
  tracing::Span span_;
  // span_'s W3C context when it records (else empty): the batches carrying
  // its windows link to it.
  std::string trace_parent_;
  // Stage times kept for span_'s children only (the metrics keep their own):
  absl::Time admitted_at_;                   // reactions: the header admitted (admission ends, receive begins)
  absl::Time preprocess_begin_;              // pool: Prepare or AfterLocating began
  std::atomic<int64_t> first_read_ns_{0};    // this pass's first window read (queue wait ends, inference begins)
  std::atomic<int64_t> first_stitch_ns_{0};  // this pass's first window stitched
  absl::Time send_begin_;  // pool: the results handed to the writer (OnDone reads it after the summary)
  CallStats stats_;        // any thread; read by OnDone, which can run while the pool still works

  ResponseWriter writer_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_SEGMENT_CALL_H_
