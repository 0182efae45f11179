// One Segment call (bidirectional stream): the reactor that receives the
// input, the WindowSource the batcher and workers feed, and the writer that
// streams progress and results back. One object per call.
//
// Threads: gRPC's threads run the reactions (OnReadDone, OnWriteDone,
// OnCancel, OnDone) and never block: decoding, preprocessing, postprocessing
// and encoding run on the service's CPU pool, windows on the model's workers.
// Every path into the reactor's write side takes mu_; one write is in flight
// at a time; Finish() waits for the write in flight.
//
// Lifetime: the object holds a reference to itself until OnDone(); pool and
// worker closures hold their own references, so late events after OnDone
// find a live object whose writes are no-ops.
#ifndef UPP_SERVER_SEGMENT_CALL_H_
#define UPP_SERVER_SEGMENT_CALL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "imageio/dicom.h"
#include "imageio/nifti.h"
#include "inference/job.h"
#include "server/admission.h"
#include "server/auth.h"
#include "server/batcher.h"
#include "server/request_validation.h"
#include "server/service_state.h"
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

  // TimedCall (the watchdog thread): header, upload-idle, send-stall and
  // whole-request timeouts.
  void CheckTimeouts(absl::Time now) override;

 private:
  enum class Phase { kHeader, kReceiving, kProcessing, kSending, kFinished };
  SegmentCall(grpc::CallbackServerContext* context, ServiceState* state);

  absl::Status HandleHeader(const unetrpp::v1::RequestHeader& header);
  absl::Status HandleChunk(unetrpp::v1::InputChunk& chunk);
  // CPU pool: decode, admit, preprocess, enqueue windows.
  void Process();
  absl::StatusOr<imageio::Volume> Decode();
  // Whom the per-caller limits count this call against: the principal when
  // authenticated, else the client address.
  Caller CountedAs() const;
  // Called by the readers before decoding: the first time, the window limit
  // and the job's working memory for an input of geometry `g`; every time,
  // `read_bytes` (what decoding this file allocates).
  absl::Status AdmitVolume(const imageio::Geometry& g, int64_t read_bytes);
  inference::JobOptions JobOptionsFromHeader() const;
  // The device the job for an input of geometry `g` lives on: the model's
  // job_device while its GPU memory budget has room for the job's estimate
  // (reserved here, in reservation_), else the CPU.
  std::string PlaceJob(const imageio::Geometry& g, const inference::JobOptions& options);
  // Frees the job, then gives its GPU memory reservation back.
  void ReleaseJob();
  // Runs `work` on the CPU pool; an exception fails this request only.
  void ScheduleGuarded(void (SegmentCall::*work)());
  // Ends a call whose client stopped taking part, with `status`; when a
  // write is in flight (it would never complete) the stream is cancelled.
  void Abandon(const absl::Status& status);
  // CPU pool, after the last window: labels, encoding, result messages.
  void Postprocess();
  // Once encoded, only the results remain: the memory reservation shrinks to
  // them and the windows are given back, so that a client that reads slowly
  // holds what it really holds, not the job's working memory (CPU pool).
  void ShrinkReservations(int64_t result_bytes);

  // Ends the call with `status` (first caller wins) after the write in flight.
  void Fail(const absl::Status& status);
  void Send(unetrpp::v1::SegmentResponse message);
  void SendProgress(unetrpp::v1::Stage stage, double fraction, bool force = false);
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NextResultChunkLocked(unetrpp::v1::SegmentResponse* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleasePendingStream();  // once: the first caller returns the BeginPendingStream slot
  void StageDone(unetrpp::v1::Stage stage, absl::Time since);
  // The request's log line and audit record (OnDone); `stages`: seconds by
  // Metrics::StageNames() name.
  void LogFinished(const absl::Status& status, const std::string& model_name, double seconds,
                   const std::map<std::string, double>& stages);

  grpc::CallbackServerContext* const context_;
  ServiceState* const state_;
  const std::string request_id_;
  const absl::Time start_ = absl::Now();
  const std::string peer_;  // client address without the port
  Principal principal_;     // set in Start, before any reaction
  // A stream's slot until the header arrives or the call's status is
  // decided: whichever thread clears pending_stream_ first releases it.
  std::atomic<bool> pending_stream_{false};
  Reservation pending_;
  std::atomic<int64_t> last_read_ns_;
  std::atomic<int64_t> write_started_ns_{0};  // 0: no write in flight
  std::shared_ptr<SegmentCall> self_;         // released in OnDone
  // context_ is valid until OnDone returns; Abandon() uses it from the
  // watchdog thread under this lock (see Abandon).
  std::recursive_mutex context_mu_;
  bool context_done_ = false;  // guarded by context_mu_

  // Read side: touched only by reactions, which gRPC serialises for reads.
  unetrpp::v1::SegmentRequest request_;
  std::atomic<Phase> phase_{Phase::kHeader};  // written by reads, the pool and Fail()
  unetrpp::v1::RequestHeader header_;
  // Set once by the header's reaction; read by the pool, workers and the
  // watchdog (Fail through Abandon), hence atomic.
  std::atomic<ServedModel*> model_{nullptr};
  ServedModel* model() const { return model_.load(std::memory_order_acquire); }
  std::optional<InputCollector> collector_;  // from the header on
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
  // Written on the pool, read by OnDone (which can run while the pool
  // still decodes a cancelled call's input).
  std::atomic<int64_t> voxels_{0};
  std::atomic<int64_t> nonfinite_replaced_{0};
  bool estimate_reserved_ = false;  // the job's working memory is in reservation_
  imageio::NiftiHeaderInfo nifti_header_;
  std::optional<imageio::DicomSeriesInfo> dicom_info_;
  std::string dicom_source_instance_;  // one instance of the series, for SEG
  int64_t input_files_ = 0;            // what the result's InputSummary reports
  std::atomic<int64_t> windows_done_{0};
  // The job's window items, set before they are queued (read by the threads
  // that stitch, which must not touch job_ once the last window is in).
  int64_t items_total_ = 0;
  std::atomic<bool> first_window_{true};
  absl::Time enqueued_at_;
  // For the log line (the stages that are not proto Stages); -1 until
  // measured. Written by a worker and the pool, read by OnDone.
  std::atomic<double> queue_wait_seconds_{-1};
  std::atomic<double> stitch_seconds_{-1};
  std::atomic<int64_t> last_progress_ns_{0};

  // Write side.
  absl::Mutex mu_;
  std::deque<unetrpp::v1::SegmentResponse> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<unetrpp::v1::SegmentResponse> progress_ ABSL_GUARDED_BY(mu_);
  unetrpp::v1::SegmentResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  // The failure's retry hint (proto::RetryAfter), sent in the trailers.
  std::optional<absl::Duration> retry_after_ ABSL_GUARDED_BY(mu_);
  // Result outputs streamed in chunks after the result header.
  std::vector<std::pair<unetrpp::v1::OutputKind, std::string>> outputs_ ABSL_GUARDED_BY(mu_);
  size_t output_index_ ABSL_GUARDED_BY(mu_) = 0;
  size_t output_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<unetrpp::v1::SegmentResponse> summary_ ABSL_GUARDED_BY(mu_);
  std::map<int, double> stage_seconds_ ABSL_GUARDED_BY(mu_);
  absl::Time send_start_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_SEGMENT_CALL_H_
