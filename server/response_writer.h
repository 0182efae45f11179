// The write side of one Segment call: what the server says, in order, with
// one write in flight (gRPC allows no more on a stream), and the call's end.
//
// Messages go out in the order they were sent; a progress message waits in a
// slot of its own and is replaced by a newer one while it waits (a slow
// client gets the latest progress, not a backlog). Results stream as the
// result header, each output in chunks of proto::kChunkBytes (an output's
// memory is freed once it is sent), the summary, then OK. The end of the call
// (OK, or the first failure) is decided once; the stream's Finish waits for
// the write in flight, and a failure drops whatever is unsent.
//
// Knows nothing of the reactor: the stream is two functions, so tests drive
// the writer without gRPC (tests/server/response_writer_test.cc). Thread-safe:
// the pool, the workers, the watchdog and gRPC's reactions all call it; the
// stream functions are called under the writer's lock, never re-entered.
#ifndef UPP_SERVER_RESPONSE_WRITER_H_
#define UPP_SERVER_RESPONSE_WRITER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/result_encoder.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

class ResponseWriter {
 public:
  struct Stream {
    // Starts a write of `message` (valid until the next OnWriteDone).
    std::function<void(const unetrpp::v1::SegmentResponse* message)> start_write;
    // Ends the call; `retry_after`: the failure's retry hint, for trailers.
    std::function<void(const grpc::Status& status, std::optional<absl::Duration> retry_after)> finish;
  };

  explicit ResponseWriter(Stream stream) : stream_(std::move(stream)) {}
  ResponseWriter(const ResponseWriter&) = delete;
  ResponseWriter& operator=(const ResponseWriter&) = delete;

  // Queues `message` after those sent before; false once the end is decided.
  bool Send(unetrpp::v1::SegmentResponse message);
  // Replaces an unsent progress message; dropped once results stream.
  void SendProgress(unetrpp::v1::SegmentResponse progress);
  // The results: `header`, each output in chunks, `summary` (its
  // STAGE_SENDING timing added: from now to the summary), then OK. False
  // when the end was decided before.
  bool SendResults(unetrpp::v1::SegmentResponse header, EncodedOutputs outputs, unetrpp::v1::SegmentResponse summary);
  // Ends the call with `status` (its retry hint in the trailers) once the
  // write in flight completes; unsent messages are dropped. False when the
  // end was decided before (the first decision wins).
  bool Fail(const absl::Status& status);

  // gRPC's OnWriteDone: `ok` false means the stream broke (the client went
  // away, or the call was cancelled): the call ends, CANCELLED unless decided.
  void OnWriteDone(bool ok);
  // gRPC's OnDone: nothing is written after it. Returns the final status.
  absl::Status Done();

  // The end is decided: results complete (summary queued) or a failure.
  bool Decided() const;
  // Finish was called or the call is done: nothing more will be written.
  bool Closed() const;
  bool Writing() const;
  // When the write in flight started (Unix ns); 0 when none is in flight.
  int64_t write_started_ns() const { return write_started_ns_.load(); }
  // From SendResults to the summary, in seconds; -1 until the summary.
  double send_seconds() const { return send_seconds_.load(); }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NextChunkLocked(unetrpp::v1::SegmentResponse* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SummaryLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ClosedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finish_called_ || done_; }

  const Stream stream_;
  mutable absl::Mutex mu_;
  std::deque<unetrpp::v1::SegmentResponse> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<unetrpp::v1::SegmentResponse> progress_ ABSL_GUARDED_BY(mu_);
  unetrpp::v1::SegmentResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Results: set by SendResults, streamed after the header.
  bool sending_results_ ABSL_GUARDED_BY(mu_) = false;
  EncodedOutputs outputs_ ABSL_GUARDED_BY(mu_);
  size_t output_index_ ABSL_GUARDED_BY(mu_) = 0;
  size_t output_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<unetrpp::v1::SegmentResponse> summary_ ABSL_GUARDED_BY(mu_);
  absl::Time results_start_ ABSL_GUARDED_BY(mu_);
  // The decided end, sent once the write in flight completes.
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Duration> retry_after_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> write_started_ns_{0};
  std::atomic<double> send_seconds_{-1};
};

}  // namespace upp::server

#endif  // UPP_SERVER_RESPONSE_WRITER_H_
