#include "server/segment_call.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "imageio/checked_math.h"
#include "imageio/input_assembly.h"
#include "preprocessing/nonfinite.h"
#include "proto/api.h"
#include "server/logging.h"
#include "server/request_validation.h"
#include "server/result_encoder.h"
#include "server/status.h"

// gRPC runs one call's reactions one after another, possibly on different
// threads; the ordering comes from gRPC's own (uninstrumented) locks. In a
// ThreadSanitizer build (deploy/tsan.sh) each reaction says so, so that the
// reactor's read-side state is not reported as racing between reactions.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define UPP_HAPPENS_AFTER(p) __tsan_acquire(p)
#define UPP_HAPPENS_BEFORE(p) __tsan_release(p)
#else
#define UPP_HAPPENS_AFTER(p) (void)0
#define UPP_HAPPENS_BEFORE(p) (void)0
#endif
// Acquire at the start of a reaction, release at its end (whatever path).
#define UPP_REACTION()                                           \
  UPP_HAPPENS_AFTER(this);                                       \
  struct ReactionEnd {                                           \
    const void* p;                                               \
    ~ReactionEnd() { UPP_HAPPENS_BEFORE(const_cast<void*>(p)); } \
  } reaction_end {                                               \
    this                                                         \
  }

namespace upp::server {
namespace {

using unetrpp::v1::SegmentResponse;
using unetrpp::v1::Stage;

constexpr absl::Duration kProgressInterval = absl::Milliseconds(200);

// Client-chosen ids go to logs only when they look like ids.
std::string LoggableId(const std::string& id) {
  if (id.empty() || id.size() > 64) return id.empty() ? "-" : "<long>";
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return "<redacted>";
  return id;
}

int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

}  // namespace

grpc::ServerBidiReactor<unetrpp::v1::SegmentRequest, SegmentResponse>* SegmentCall::Start(
    grpc::CallbackServerContext* context, ServiceState* state) {
  std::shared_ptr<SegmentCall> call(new SegmentCall(context, state));
  UPP_HAPPENS_BEFORE(call.get());  // constructed before any reaction
  call->self_ = call;
  state->Watch(call);
  auto principal = state->auth().Authenticate(*context);
  const absl::Status allowed = principal.ok() ? Authenticator::Authorize(*principal, kPermSegment) : principal.status();
  if (principal.ok()) call->principal_ = *principal;
  if (!allowed.ok()) {
    call->Fail(allowed);
    return call.get();
  }
  auto pending = state->admission().BeginPendingStream(call->CountedAs());
  if (!pending.ok()) {
    call->Fail(pending.status());
    return call.get();
  }
  call->pending_ = *std::move(pending);
  call->pending_stream_ = true;
  UPP_HAPPENS_BEFORE(call.get());
  call->StartRead(&call->request_);
  return call.get();
}

SegmentCall::SegmentCall(grpc::CallbackServerContext* context, ServiceState* state)
    : context_(context),
      state_(state),
      request_id_(state->NewRequestId()),
      peer_(ClientAddress(context->peer())),
      last_read_ns_(NowNs()) {
  const auto deadline = context->deadline();
  if (deadline < std::chrono::system_clock::time_point::max()) deadline_ = absl::FromChrono(deadline);
}

SegmentCall::~SegmentCall() { ReleaseJob(); }  // reservation_ then gives back the rest

bool SegmentCall::Alive() const { return alive_.load() && absl::Now() < deadline_; }

// ------------------------------------------------------------------- reading

void SegmentCall::OnReadDone(bool ok) {
  UPP_REACTION();
  last_read_ns_ = NowNs();
  if (!ok) {
    // The client half-closed before EndOfInput, or cancelled (OnCancel says
    // which code; the failed read may arrive first).
    if (context_->IsCancelled()) return OnCancel();
    if (phase_ == Phase::kHeader || phase_ == Phase::kReceiving)
      Fail(absl::InvalidArgumentError("the client closed its stream before EndOfInput"));
    return;
  }
  absl::Status status;
  // An exception escaping a reaction would end the process: it fails this
  // request only.
  try {
    const bool header_seen = phase_ != Phase::kHeader;
    auto kind = ClassifyMessage(request_, header_seen, header_seen && !collector_->inputs().empty());
    if (!kind.ok()) {
      status = kind.status();
    } else if (*kind == MessageKind::kHeader) {
      status = HandleHeader(request_.header());
    } else if (*kind == MessageKind::kChunk) {
      status = HandleChunk(*request_.mutable_chunk());
    } else {
      StageDone(unetrpp::v1::STAGE_RECEIVING, start_);
      phase_ = Phase::kProcessing;
      ScheduleGuarded(&SegmentCall::Process);
      return;  // no further reads: the input is complete
    }
  } catch (const std::bad_alloc&) {
    status = proto::WithRetryAfter(
        absl::ResourceExhaustedError("the server ran out of memory receiving this request; retry later"),
        absl::Seconds(30));
  } catch (const std::exception&) {
    status = absl::InternalError("an unexpected error ended the request");
  }
  if (!status.ok()) return Fail(status);
  UPP_HAPPENS_BEFORE(this);
  StartRead(&request_);
}

absl::Status SegmentCall::HandleHeader(const unetrpp::v1::RequestHeader& header) {
  ReleasePendingStream();
  header_ = header;
  const std::string name = header.model().empty() ? state_->config().default_model() : header.model();
  model_.store(state_->models().Find(name), std::memory_order_release);
  if (!model()) return absl::NotFoundError(absl::StrCat("no model named \"", name, "\" (see ListModels)"));
  header_.set_model(name);
  RequestLimits limits = RequestLimits::FromConfig(state_->config());
  if (header.priority() > 0 && principal_.authenticated) {
    // With credentials, the permission decides (not the anonymous switch).
    if (auto s = Authenticator::Authorize(principal_, kPermSegmentPriority); !s.ok()) return s;
    limits.allow_client_priority = true;
  }
  const ModelFacts facts{model()->plan().input_channels(), model()->plan().StepFloor()};
  if (auto s = ValidateHeader(header_, facts, limits); !s.ok()) return s;
  priority_ = header_.priority();
  collector_.emplace(limits, header_.format(), facts.input_channels);
  uint32_t position = 0;
  auto reservation = state_->admission().BeginRequest(CountedAs(), &position);
  if (!reservation.ok()) return reservation.status();
  reservation_ = *std::move(reservation);
  phase_ = Phase::kReceiving;
  SegmentResponse accepted;
  accepted.mutable_accepted()->set_server_request_id(request_id_);
  accepted.mutable_accepted()->set_queue_position(position);
  Send(std::move(accepted));
  return absl::OkStatus();
}

absl::Status SegmentCall::HandleChunk(unetrpp::v1::InputChunk& chunk) {
  state_->metrics().BytesIn(static_cast<int64_t>(chunk.data().size()));
  // Memory is counted from the first byte: the upload itself, as allocated.
  if (auto s = reservation_.AddBytes(collector_->BytesToAdd(chunk)); !s.ok()) return s;
  if (auto s = collector_->Add(chunk); !s.ok()) return s;
  bytes_received_ = collector_->bytes();
  if (bytes_received_ >= next_receive_progress_) {
    next_receive_progress_ = bytes_received_ + (16 << 20);
    const double total = static_cast<double>(header_.expected_input_bytes());
    SendProgress(unetrpp::v1::STAGE_RECEIVING, total > 0 ? std::min(1.0, bytes_received_ / total) : 0.0);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- processing

absl::StatusOr<imageio::Volume> SegmentCall::Decode() {
  imageio::AssemblyOptions options;
  options.format =
      header_.format() == unetrpp::v1::INPUT_FORMAT_DICOM ? imageio::InputFormat::kDicom : imageio::InputFormat::kNifti;
  options.channels = model()->plan().input_channels();
  options.modalities = {model()->entry().modality()};
  options.series_instance_uid = header_.series_instance_uid();
  options.max_voxels = static_cast<int64_t>(state_->config().limits().max_voxels());
  options.admit = [this](const imageio::Geometry& g, int64_t read_bytes) { return AdmitVolume(g, read_bytes); };
  options.reserve = [this](int64_t bytes) { return reservation_.AddBytes(bytes); };
  auto input = imageio::AssembleInputs(collector_->inputs(), options);
  if (!input.ok()) return input.status();
  nifti_header_ = input->nifti_header;
  dicom_info_ = std::move(input->dicom);
  dicom_source_instance_ = std::move(input->dicom_source_instance);
  input_files_ = input->files;
  return std::move(input->volume);
}

Caller SegmentCall::CountedAs() const {
  return principal_.authenticated ? Caller::Principal(principal_.name) : Caller::Address(peer_);
}

inference::JobOptions SegmentCall::JobOptionsFromHeader() const {
  inference::JobOptions options;
  if (header_.step() > 0) options.step = header_.step();
  if (header_.mirror()) {
    options.mirror_axes = std::vector<int>{0, 1, 2};
  } else if (!header_.mirror_axes().empty()) {
    options.mirror_axes = std::vector<int>(header_.mirror_axes().begin(), header_.mirror_axes().end());
  }
  return options;
}

absl::Status SegmentCall::AdmitVolume(const imageio::Geometry& g, int64_t read_bytes) {
  int64_t bytes = read_bytes;
  if (!estimate_reserved_) {
    const auto& plan = model()->plan();
    const auto options = JobOptionsFromHeader();
    const int64_t items = inference::SegmentationJob::CountItems(g, plan, options);
    const auto max_items = static_cast<int64_t>(state_->config().limits().max_windows_per_request());
    if (items > max_items)
      return absl::ResourceExhaustedError(absl::StrCat(
          "this volume needs ",
          items == std::numeric_limits<int64_t>::max() ? std::string("too many") : absl::StrCat(items),
          " windows, more than the server's limit of ", max_items, " per request (limits.max_windows_per_request)"));
    bytes = imageio::OrMax(
        imageio::CheckedAdd(bytes, inference::SegmentationJob::EstimateBytes(g, plan.input_channels(), plan, options)));
  }
  if (auto s = reservation_.AddBytes(bytes); !s.ok()) return s;
  estimate_reserved_ = true;
  return absl::OkStatus();
}

std::string SegmentCall::PlaceJob(const imageio::Geometry& g, const inference::JobOptions& options) {
  const std::string& device = model()->entry().job_device();
  if (device == "cpu") return device;
  const auto& plan = model()->plan();
  const int64_t bytes = inference::SegmentationJob::EstimateBytes(g, plan.input_channels(), plan, options);
  // A full GPU sends the job to the CPU rather than the client away: its
  // host memory is admitted already, and it is only slower there.
  return reservation_.AddDeviceBytes(device, bytes) ? device : "cpu";
}

void SegmentCall::ReleaseJob() {
  job_.reset();
  reservation_.ReleaseDeviceBytes();
}

void SegmentCall::ScheduleGuarded(void (SegmentCall::*work)()) {
  auto self = shared_from_this();
  state_->cpu_pool().Schedule([self, work] {
    try {
      ((*self).*work)();
    } catch (const std::bad_alloc&) {
      self->Fail(proto::WithRetryAfter(
          absl::ResourceExhaustedError("the server ran out of memory for this request; retry later"),
          absl::Seconds(30)));
    } catch (const std::exception& e) {
      spdlog::error("request {}: unexpected exception: {:.200}", self->request_id_, e.what());
      self->Fail(absl::InternalError("an unexpected error ended the request"));
    }
  });
}

void SegmentCall::Process() {
  if (!Alive()) return;
  absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_DECODING, 0, true);
  auto volume = Decode();
  collector_->inputs().clear();
  if (!volume.ok()) return Fail(volume.status());
  StageDone(unetrpp::v1::STAGE_DECODING, t);
  voxels_ = volume->geometry.NumVoxels();
  if (!Alive()) return;
  const auto policy = state_->config().nonfinite_voxels() == "refuse" ? preprocessing::NonFinitePolicy::kRefuse
                                                                      : preprocessing::NonFinitePolicy::kReplace;
  auto replaced = preprocessing::HandleNonFinite(*volume, policy);
  if (!replaced.ok()) return Fail(replaced.status());
  nonfinite_replaced_ = *replaced;
  // Readers admit before decoding; a path that did not is admitted here.
  if (!estimate_reserved_)
    if (auto s = AdmitVolume(volume->geometry, 0); !s.ok()) return Fail(s);
  inference::JobOptions options = JobOptionsFromHeader();
  options.device = PlaceJob(volume->geometry, options);

  t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_PREPROCESSING, 0, true);
  auto job = inference::SegmentationJob::Create(std::move(*volume), model()->plan(), options);
  if (!job.ok()) return Fail(job.status());
  job_ = std::move(*job);
  state_->metrics().JobCreated(model()->name(), options.device);
  StageDone(unetrpp::v1::STAGE_PREPROCESSING, t);
  const int64_t items = job_->num_items();
  items_total_ = items;
  if (auto s = reservation_.AddWindows(items, model()->batcher().queued_windows()); !s.ok()) return Fail(s);
  if (!Alive()) return;
  enqueued_at_ = absl::Now();
  SendProgress(unetrpp::v1::STAGE_INFERENCE, 0, true);
  model()->batcher().Enqueue(shared_from_this(), items);
  state_->metrics().SetQueuedWindows(model()->name(), model()->batcher().queued_windows());
}

absl::Status SegmentCall::ReadWindow(int64_t item, float* dst) {
  if (!Alive()) return absl::CancelledError("the request ended");
  if (first_window_.exchange(false)) {
    queue_wait_seconds_ = absl::ToDoubleSeconds(absl::Now() - enqueued_at_);
    state_->metrics().Stage(model()->name(), "queue_wait", queue_wait_seconds_);
  }
  try {
    return job_->GetInput(item, dst);
  } catch (const std::exception&) {
    return absl::InternalError("an unexpected error reading a window");
  }
}

void SegmentCall::WindowDone(int64_t item, const float* logits) {
  if (!Alive()) return;
  absl::StatusOr<bool> done;
  try {
    done = job_->AddOutput(item, logits);
  } catch (const std::exception&) {
    done = absl::InternalError("an unexpected error stitching a window");
  }
  if (!done.ok()) return Fail(done.status());
  ++windows_done_;
  // Not job_: once another thread has added the last window, Postprocess
  // may already have released it.
  SendProgress(unetrpp::v1::STAGE_INFERENCE, static_cast<double>(windows_done_) / items_total_, *done);
  if (*done) {
    StageDone(unetrpp::v1::STAGE_INFERENCE, enqueued_at_);
    auto self = shared_from_this();
    ScheduleGuarded(&SegmentCall::Postprocess);
  }
}

void SegmentCall::WindowsFailed(const absl::Status& status) {
  if (Alive()) Fail(status);
}

void SegmentCall::Postprocess() {
  if (!Alive()) return;
  absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_POSTPROCESSING, 0, true);
  const inference::StageTimes times = job_->timings();
  auto labels = job_->Finish();
  ReleaseJob();  // accumulators and the network input go back now
  if (!labels.ok()) return Fail(labels.status());
  stitch_seconds_ = times.stitch;
  state_->metrics().Stage(model()->name(), "stitch", times.stitch);
  StageDone(unetrpp::v1::STAGE_POSTPROCESSING, t);

  t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_ENCODING, 0, true);
  EncodingContext context;
  context.nifti_header = nifti_header_;
  context.dicom = dicom_info_ ? &*dicom_info_ : nullptr;
  context.dicom_source_instance = &dicom_source_instance_;
  context.labels = model()->plan().labels;
  context.algorithm_name = "UNETR++ " + model()->name();
  context.algorithm_version = model()->entry().version();
  auto outputs = EncodeOutputs(*labels, header_.outputs(), context);
  if (!outputs.ok()) return Fail(outputs.status());
  StageDone(unetrpp::v1::STAGE_ENCODING, t);
  SegmentResponse header = ResultHeader(*labels, model()->plan().labels, *outputs);
  FillInputSummary(dicom_info_ ? &*dicom_info_ : nullptr, input_files_,
                   header.mutable_result_header()->mutable_input());
  labels->labels.clear();
  labels->labels.shrink_to_fit();
  std::string().swap(dicom_source_instance_);
  int64_t result_bytes = 0;
  for (const auto& [kind, bytes] : *outputs) result_bytes += static_cast<int64_t>(bytes.size());
  ShrinkReservations(result_bytes);
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || done_) return;
    queue_.push_back(std::move(header));
    outputs_ = std::move(*outputs);
    phase_ = Phase::kSending;
    send_start_ = absl::Now();
    progress_.reset();
    MaybeWriteLocked();
  }
}

void SegmentCall::ShrinkReservations(int64_t result_bytes) {
  reservation_.ShrinkBytesTo(result_bytes);
  reservation_.ReleaseWindows();
}

// ------------------------------------------------------------------- writing

void SegmentCall::Send(SegmentResponse message) {
  absl::MutexLock lock(&mu_);
  if (finish_called_ || done_) return;
  queue_.push_back(std::move(message));
  MaybeWriteLocked();
}

void SegmentCall::SendProgress(Stage stage, double fraction, bool force) {
  const int64_t now_ns = absl::ToUnixNanos(absl::Now());
  if (!force && now_ns - last_progress_ns_.load() < absl::ToInt64Nanoseconds(kProgressInterval)) return;
  last_progress_ns_ = now_ns;
  SegmentResponse m;
  auto* p = m.mutable_progress();
  p->set_stage(stage);
  p->set_fraction(fraction);
  p->set_bytes_received(bytes_received_);
  if (stage == unetrpp::v1::STAGE_INFERENCE && items_total_ > 0) {
    p->set_windows_done(windows_done_.load());
    p->set_windows_total(items_total_);
  }
  absl::MutexLock lock(&mu_);
  if (finish_called_ || done_ || phase_ == Phase::kSending) return;
  progress_ = std::move(m);  // replaces an unsent older one
  MaybeWriteLocked();
}

bool SegmentCall::NextResultChunkLocked(SegmentResponse* out) {
  while (output_index_ < outputs_.size()) {
    auto& [kind, bytes] = outputs_[output_index_];
    if (output_offset_ < bytes.size()) {
      const size_t n = std::min(proto::kChunkBytes, bytes.size() - output_offset_);
      out->Clear();
      out->mutable_result_chunk()->set_output(kind);
      out->mutable_result_chunk()->set_data(bytes.data() + output_offset_, n);
      output_offset_ += n;
      state_->metrics().BytesOut(static_cast<int64_t>(n));
      return true;
    }
    std::string().swap(bytes);  // sent: free it
    ++output_index_;
    output_offset_ = 0;
  }
  return false;
}

void SegmentCall::MaybeWriteLocked() {
  if (writing_ || done_ || finish_called_) return;
  if (!queue_.empty()) {
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
  } else if (progress_) {
    in_flight_ = std::move(*progress_);
    progress_.reset();
  } else if (phase_ == Phase::kSending && NextResultChunkLocked(&in_flight_)) {
  } else if (phase_ == Phase::kSending) {
    // Everything is sent: the summary, then OK.
    phase_ = Phase::kFinished;
    SegmentResponse summary;
    auto* s = summary.mutable_summary();
    s->set_server_request_id(request_id_);
    s->set_client_request_id(header_.client_request_id());
    stage_seconds_[unetrpp::v1::STAGE_SENDING] = absl::ToDoubleSeconds(absl::Now() - send_start_);
    for (const auto& [stage, seconds] : stage_seconds_) {
      auto* timing = s->add_timings();
      timing->set_stage(static_cast<Stage>(stage));
      timing->set_seconds(seconds);
    }
    s->set_windows(windows_done_.load());
    s->set_voxels(voxels_.load());
    s->set_nonfinite_voxels_replaced(nonfinite_replaced_.load());
    state_->metrics().Stage(model()->name(), "send", stage_seconds_[unetrpp::v1::STAGE_SENDING]);
    in_flight_ = std::move(summary);
    pending_finish_ = grpc::Status::OK;
  } else {
    if (pending_finish_) FinishLocked(*pending_finish_);
    return;
  }
  writing_ = true;
  write_started_ns_ = NowNs();
  StartWrite(&in_flight_);
}

void SegmentCall::OnWriteDone(bool ok) {
  UPP_REACTION();
  absl::MutexLock lock(&mu_);
  writing_ = false;
  write_started_ns_ = 0;
  if (!ok) {  // the stream is broken (client gone, or abandoned); OnCancel or OnDone follows
    if (!finish_called_)
      FinishLocked(pending_finish_ ? *pending_finish_ : grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
    return;
  }
  if (pending_finish_ && queue_.empty() && !progress_ && phase_ != Phase::kSending) {
    FinishLocked(*pending_finish_);
    return;
  }
  MaybeWriteLocked();
}

void SegmentCall::ReleasePendingStream() {
  if (pending_stream_.exchange(false)) pending_.Release();
}

void SegmentCall::FinishLocked(const grpc::Status& status) {
  if (finish_called_ || done_) return;
  if (writing_) {  // after the write in flight
    pending_finish_ = status;
    return;
  }
  finish_called_ = true;
  // The header can no longer come: the slot is free before the client sees
  // the status (a client that retries at once must find it free).
  ReleasePendingStream();
  final_status_ = proto::FromGrpcStatus(status);
  if (retry_after_) proto::AddRetryAfterTrailer(*context_, *retry_after_);
  Finish(status);
}

void SegmentCall::Fail(const absl::Status& status) {
  alive_ = false;
  if (model()) model()->batcher().Remove(this);
  absl::MutexLock lock(&mu_);
  if (finish_called_ || done_ || pending_finish_) return;
  retry_after_ = proto::RetryAfter(status);
  queue_.clear();
  progress_.reset();
  outputs_.clear();
  phase_ = Phase::kFinished;
  if (status.code() == absl::StatusCode::kInternal)
    spdlog::error("request {}: internal error: {}", request_id_, std::string(status.message()));
  FinishLocked(proto::ToGrpcStatus(status));
}

void SegmentCall::CheckTimeouts(absl::Time now) {
  const auto& t = state_->config().timeouts();
  const int64_t now_ns = absl::ToUnixNanos(now);
  const int64_t write_ns = write_started_ns_.load();
  const Phase phase = phase_.load();
  auto over = [](int64_t ns, double seconds) { return static_cast<double>(ns) > seconds * 1e9; };
  if (write_ns > 0 && over(now_ns - write_ns, t.send_stall_seconds()))
    return Abandon(absl::DeadlineExceededError(
        absl::StrCat("the client did not read its results for ", t.send_stall_seconds(), " s")));
  if (phase == Phase::kFinished) return;
  if (now - start_ > absl::Seconds(t.max_request_seconds()))
    return Abandon(absl::DeadlineExceededError(
        absl::StrCat("the request ran longer than the server's limit of ", t.max_request_seconds(), " s")));
  if (phase == Phase::kHeader && now - start_ > absl::Seconds(t.header_seconds()))
    return Abandon(absl::DeadlineExceededError(
        absl::StrCat("no RequestHeader within ", t.header_seconds(), " s of opening the stream")));
  if (phase == Phase::kReceiving && over(now_ns - last_read_ns_.load(), t.upload_idle_seconds()))
    return Abandon(absl::DeadlineExceededError(
        absl::StrCat("no input for ", t.upload_idle_seconds(), " s; send InputChunks steadily, then EndOfInput")));
}

void SegmentCall::Abandon(const absl::Status& status) {
  bool writing = false;
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || done_) return;
    writing = writing_;
  }
  Fail(status);  // with no write in flight this finishes the call (a pending read ends with it)
  if (!writing) return;
  // A write the client never takes would hold the call for ever: cancel the
  // stream. gRPC destroys context_ after OnDone, which another thread may be
  // running, so OnDone waits for this lock. Recursive because TryCancel may
  // run the reactions, OnDone included, inline on this thread.
  std::lock_guard<std::recursive_mutex> lock(context_mu_);
  if (!context_done_) context_->TryCancel();
}

void SegmentCall::OnCancel() {
  UPP_REACTION();
  // A client whose deadline passes cancels the stream itself, a few
  // milliseconds before the server's own timer (the deadline travels as a
  // timeout and starts later here): within 250 ms it is the deadline.
  const bool expired = absl::Now() + absl::Milliseconds(250) >= deadline_;
  Fail(expired ? absl::DeadlineExceededError("the request's deadline passed")
               : absl::CancelledError("the client cancelled the request"));
}

void SegmentCall::StageDone(Stage stage, absl::Time since) {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - since);
  state_->metrics().Stage(model()->name(), proto::StageName(stage), seconds);
  absl::MutexLock lock(&mu_);
  stage_seconds_[stage] = seconds;
}

void SegmentCall::OnDone() {
  UPP_REACTION();
  {
    std::lock_guard<std::recursive_mutex> lock(context_mu_);
    context_done_ = true;  // context_ goes away after this reaction
  }
  alive_ = false;
  if (model()) model()->batcher().Remove(this);
  ReleasePendingStream();
  std::shared_ptr<SegmentCall> keep;
  absl::Status status;
  std::map<std::string, double> stages;  // by name
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    status = final_status_;
    for (const auto& [stage, seconds] : stage_seconds_) stages[proto::StageName(static_cast<Stage>(stage))] = seconds;
    keep = std::move(self_);
  }
  if (const double s = queue_wait_seconds_.load(); s >= 0) stages["queue_wait"] = s;
  if (const double s = stitch_seconds_.load(); s >= 0) stages["stitch"] = s;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  const std::string model_name = model() ? model()->name() : "-";
  state_->metrics().RequestFinished(model_name, absl::StatusCodeToString(status.code()), seconds);
  LogFinished(status, model_name, seconds, stages);
}

void SegmentCall::LogFinished(const absl::Status& status, const std::string& model_name, double seconds,
                              const std::map<std::string, double>& stages) {
  const std::string code = absl::StatusCodeToString(status.code());
  // The status message as the client got it: the server's messages name no
  // patient data (no DICOM values or UIDs; counts and file numbers).
  const std::string message = LoggableMessage(std::string(status.message()));
  nlohmann::ordered_json stage_seconds = nlohmann::ordered_json::object();
  std::string timings;
  for (const std::string& stage : Metrics::StageNames()) {
    const auto it = stages.find(stage);
    if (it == stages.end()) continue;
    stage_seconds[stage] = it->second;
    absl::StrAppend(&timings, timings.empty() ? "" : " ", stage, "=", absl::StrFormat("%.3f", it->second));
  }
  nlohmann::ordered_json fields{{"message", "request finished"},
                                {"request_id", request_id_},
                                {"client_request_id", LoggableId(header_.client_request_id())},
                                {"model", model_name},
                                {"peer", peer_},
                                {"voxels", voxels_.load()},
                                {"windows", windows_done_.load()},
                                {"seconds", seconds},
                                {"stage_seconds", stage_seconds},
                                {"status", code}};
  if (!status.ok()) fields["status_message"] = message;
  LogWithFields(spdlog::level::info, fields,
                absl::StrFormat("request %s client_id=%s model=%s peer=%s voxels=%d windows=%d seconds=%.3f [%s] "
                                "status=%s%s",
                                request_id_, LoggableId(header_.client_request_id()), model_name, peer_, voxels_.load(),
                                windows_done_.load(), seconds, timings, code, status.ok() ? "" : ": " + message));
  nlohmann::json audit{{"time", absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone())},
                       {"principal", principal_.name},
                       {"peer", peer_},
                       {"method", "Segment"},
                       {"model", model_name},
                       {"request_id", request_id_},
                       {"input_bytes", bytes_received_},
                       {"windows", windows_done_.load()},
                       {"status", code},
                       {"seconds", seconds}};
  state_->Audit(audit.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace upp::server
