#include "server/response_writer.h"

#include <algorithm>

#include "proto/api.h"

namespace upp::server {

using unetrpp::v1::SegmentResponse;

bool ResponseWriter::Send(SegmentResponse message) {
  absl::MutexLock lock(&mu_);
  if (pending_finish_ || ClosedLocked()) return false;
  queue_.push_back(std::move(message));
  MaybeWriteLocked();
  return true;
}

void ResponseWriter::SendProgress(SegmentResponse progress) {
  absl::MutexLock lock(&mu_);
  if (pending_finish_ || ClosedLocked() || sending_results_) return;
  progress_ = std::move(progress);  // replaces an unsent older one
  MaybeWriteLocked();
}

bool ResponseWriter::SendResults(SegmentResponse header, EncodedOutputs outputs, SegmentResponse summary) {
  absl::MutexLock lock(&mu_);
  if (pending_finish_ || ClosedLocked() || sending_results_) return false;
  queue_.push_back(std::move(header));
  outputs_ = std::move(outputs);
  summary_ = std::move(summary);
  sending_results_ = true;
  results_start_ = absl::Now();
  progress_.reset();  // the results say more than any progress
  MaybeWriteLocked();
  return true;
}

bool ResponseWriter::Fail(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (pending_finish_ || ClosedLocked()) return false;
  retry_after_ = proto::RetryAfter(status);
  queue_.clear();
  progress_.reset();
  outputs_.clear();
  summary_.reset();
  sending_results_ = false;
  FinishLocked(proto::ToGrpcStatus(status));
  return true;
}

void ResponseWriter::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  write_started_ns_ = 0;
  if (!ok) {  // the stream is broken; nothing more can be written
    FinishLocked(pending_finish_ ? *pending_finish_ : grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
    return;
  }
  MaybeWriteLocked();
}

absl::Status ResponseWriter::Done() {
  absl::MutexLock lock(&mu_);
  done_ = true;
  return final_status_;
}

bool ResponseWriter::Decided() const {
  absl::MutexLock lock(&mu_);
  return pending_finish_ || ClosedLocked();
}

bool ResponseWriter::Closed() const {
  absl::MutexLock lock(&mu_);
  return ClosedLocked();
}

bool ResponseWriter::Writing() const {
  absl::MutexLock lock(&mu_);
  return writing_;
}

void ResponseWriter::MaybeWriteLocked() {
  if (writing_ || ClosedLocked()) return;
  if (!queue_.empty()) {
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
  } else if (progress_) {
    in_flight_ = std::move(*progress_);
    progress_.reset();
  } else if (sending_results_ && NextChunkLocked(&in_flight_)) {
  } else if (sending_results_) {
    SummaryLocked();
  } else {
    if (pending_finish_) FinishLocked(*pending_finish_);
    return;
  }
  writing_ = true;
  write_started_ns_ = absl::ToUnixNanos(absl::Now());
  stream_.start_write(&in_flight_);
}

bool ResponseWriter::NextChunkLocked(SegmentResponse* out) {
  while (output_index_ < outputs_.size()) {
    auto& [kind, bytes] = outputs_[output_index_];
    if (output_offset_ < bytes.size()) {
      const size_t n = std::min(proto::kChunkBytes, bytes.size() - output_offset_);
      out->Clear();
      out->mutable_result_chunk()->set_output(kind);
      out->mutable_result_chunk()->set_data(bytes.data() + output_offset_, n);
      output_offset_ += n;
      return true;
    }
    std::string().swap(bytes);  // sent: its memory goes back now, not at the call's end
    ++output_index_;
    output_offset_ = 0;
  }
  return false;
}

void ResponseWriter::SummaryLocked() {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - results_start_);
  auto* timing = summary_->mutable_summary()->add_timings();
  timing->set_stage(unetrpp::v1::STAGE_SENDING);
  timing->set_seconds(seconds);
  send_seconds_ = seconds;
  in_flight_ = std::move(*summary_);
  summary_.reset();
  sending_results_ = false;
  pending_finish_ = grpc::Status::OK;  // after the summary's write
}

void ResponseWriter::FinishLocked(const grpc::Status& status) {
  if (ClosedLocked()) return;
  if (writing_) {  // after the write in flight
    pending_finish_ = status;
    return;
  }
  finish_called_ = true;
  final_status_ = proto::FromGrpcStatus(status);
  stream_.finish(status, retry_after_);
}

}  // namespace upp::server
