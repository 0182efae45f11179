#include "server/segment_call.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "imageio/checked_math.h"
#include "inference/label_subset.h"
#include "preprocessing/nonfinite.h"
#include "proto/api.h"
#include "server/job_request.h"
#include "server/logging.h"
#include "server/reaction_order.h"
#include "server/result_encoder.h"
#include "tracing/server_tracing.h"

namespace upp::server {
namespace {

using unetrpp::v1::SegmentResponse;
using unetrpp::v1::Stage;

constexpr absl::Duration kProgressInterval = absl::Milliseconds(200);

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
      config_(state->config()),
      request_id_(state->NewRequestId()),
      peer_(ClientAddress(context->peer())),
      last_read_ns_(NowNs()),
      writer_(WriterStream()) {
  const auto deadline = context->deadline();
  if (deadline < std::chrono::system_clock::time_point::max()) deadline_ = absl::FromChrono(deadline);
  span_ = tracing::StartCallSpan("Segment", context->client_metadata(), start_);
  // Only a recorded span is linked from batches: an unsampled caller's
  // request is untraced, and untraced requests make no span (docs/server.md).
  if (span_.recording()) trace_parent_ = span_.TraceParent();
}

SegmentCall::~SegmentCall() {
  ReleaseJob();  // reservation_ then gives back the rest
  if (orphaned_) state_->AddOrphaned(-1);
}

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
      if (span_.recording()) {
        tracing::Span receive = StageSpan("receive", admitted_at_);
        receive.SetAttribute("upp.input_bytes", bytes_received_);
        receive.End(absl::Now());
      }
      phase_ = Phase::kProcessing;
      ScheduleGuarded(state_->decode_pool(), &SegmentCall::Process);
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
  const std::string name = header.model().empty() ? config_->default_model() : header.model();
  // The version is held for the whole call: a version loaded meanwhile
  // serves the next requests, this one finishes on the one it began with.
  auto pin = state_->models().Acquire(name, header.model_version());
  if (!pin.ok()) return pin.status();
  pin_ = *std::move(pin);
  model_.store(pin_.get(), std::memory_order_release);
  header_.set_model(name);
  auto speed = PlanSpeed(header_, model()->entry(), model()->plan());
  if (!speed.ok()) return speed.status();
  speed_ = *std::move(speed);
  if (auto s = UseFastestModel(); !s.ok()) return s;
  stats_.mode = speed_.mode;
  RequestLimits limits = RequestLimits::FromConfig(*config_);
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
  admitted_at_ = absl::Now();
  TraceStage("admission", start_, admitted_at_);
  phase_ = Phase::kReceiving;
  SegmentResponse accepted;
  accepted.mutable_accepted()->set_server_request_id(request_id_);
  accepted.mutable_accepted()->set_queue_position(position);
  Send(std::move(accepted));
  return absl::OkStatus();
}

absl::Status SegmentCall::UseFastestModel() {
  const std::string& fastest = speed_.run_model.empty() ? speed_.locator_model : speed_.run_model;
  if (fastest.empty()) return absl::OkStatus();
  // Held for the call as the model's own version is (pin_).
  auto pin = state_->models().Acquire(fastest);
  if (!pin.ok()) return pin.status();
  fastest_pin_ = *std::move(pin);
  ServedModel* const other = fastest_pin_.get();
  if (auto s = CheckSameLabels(model()->name(), model()->plan(), fastest, other->plan()); !s.ok()) return s;
  if (speed_.run_model.empty()) {
    locator_ = other;
  } else {
    model_.store(other, std::memory_order_release);
  }
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
  options.max_voxels = static_cast<int64_t>(config_->limits().max_voxels());
  options.admit = [this](const imageio::Geometry& g, int64_t read_bytes) { return AdmitVolume(g, read_bytes); };
  options.reserve = [this](int64_t bytes) { return reservation_.AddBytes(bytes); };
  options.cancelled = [this] { return !Alive(); };
  auto input = imageio::AssembleInputs(collector_->inputs(), options);
  if (!input.ok()) return input.status();
  input_ = std::move(input->description);
  return std::move(input->volume);
}

Caller SegmentCall::CountedAs() const {
  return principal_.authenticated ? Caller::Principal(principal_.name) : Caller::Address(peer_);
}

absl::Status SegmentCall::AdmitVolume(const imageio::Geometry& g, int64_t read_bytes) {
  int64_t bytes = read_bytes;
  if (!estimate_reserved_) {
    const JobLimits limits = JobLimits::FromConfig(*config_);
    auto job_bytes = JobBytesToAdmit(g, model()->plan(), JobOptionsFor(header_, speed_, model()->entry()), limits);
    if (!job_bytes.ok()) return job_bytes.status();
    bytes = imageio::OrMax(imageio::CheckedAdd(bytes, *job_bytes));
    if (locator_) {  // its job, and the input held for the second pass
      auto locating = JobBytesToAdmit(g, locator_->plan(), inference::LocatingOptions(), limits);
      if (!locating.ok()) return locating.status();
      const int64_t held = imageio::OrMax(
          imageio::CheckedProduct({g.size[0], g.size[1], g.size[2], model()->plan().input_channels(), 4}));
      bytes = imageio::OrMax(imageio::CheckedAdd(bytes, imageio::OrMax(imageio::CheckedAdd(*locating, held))));
    }
  }
  if (auto s = reservation_.AddBytes(bytes); !s.ok()) return s;
  estimate_reserved_ = true;
  return absl::OkStatus();
}

std::string SegmentCall::PlaceJob(const imageio::Geometry& g, const inference::JobOptions& options) {
  const std::string& device = Running()->entry().job_device();
  if (device == "cpu") return device;
  const auto& plan = Running()->plan();
  const int64_t bytes = inference::SegmentationJob::EstimateBytes(g, plan.input_channels(), plan, options);
  // A full GPU sends the job to the CPU rather than the client away: its
  // host memory is admitted already, and it is only slower there.
  return reservation_.AddDeviceBytes(device, bytes) ? device : "cpu";
}

void SegmentCall::ReleaseJob() {
  job_.reset();
  reservation_.ReleaseDeviceBytes();
}

void SegmentCall::ScheduleGuarded(ThreadPool& pool, void (SegmentCall::*work)()) {
  auto self = shared_from_this();
  pool.Schedule([self, work] {
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
  const absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_DECODING, 0, true);
  auto volume = Decode();
  collector_->inputs().clear();
  if (!volume.ok()) return Fail(volume.status());
  StageDone(unetrpp::v1::STAGE_DECODING, t);
  TraceStage("decode", t, absl::Now());
  stats_.voxels = volume->geometry.NumVoxels();
  if (!Alive()) return;
  decoded_ = *std::move(volume);
  ScheduleGuarded(state_->cpu_pool(), &SegmentCall::Prepare);
}

void SegmentCall::Prepare() {
  std::optional<imageio::Volume> volume = std::move(decoded_);
  decoded_.reset();
  if (!Alive()) return;
  preprocess_begin_ = absl::Now();
  const auto policy = config_->nonfinite_voxels() == "refuse" ? preprocessing::NonFinitePolicy::kRefuse
                                                              : preprocessing::NonFinitePolicy::kReplace;
  auto replaced = preprocessing::HandleNonFinite(*volume, policy);
  if (!replaced.ok()) return Fail(replaced.status());
  stats_.nonfinite_replaced = *replaced;
  // Readers admit before decoding; a path that did not is admitted here.
  if (!estimate_reserved_)
    if (auto s = AdmitVolume(volume->geometry, 0); !s.ok()) return Fail(s);
  Enqueue(*std::move(volume));
}

void SegmentCall::Enqueue(imageio::Volume volume) {
  if (!locator_) return StartJob(std::move(volume), JobOptionsFor(header_, speed_, model()->entry()));
  held_ = volume;  // admitted with the locator's job (AdmitVolume)
  locating_ = true;
  StartJob(std::move(volume), inference::LocatingOptions());
}

void SegmentCall::StartJob(imageio::Volume volume, const inference::JobOptions& job_options) {
  ServedModel* const running = Running();
  inference::JobOptions options = job_options;
  options.device = PlaceJob(volume.geometry, options);
  const absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_PREPROCESSING, 0, true);
  auto job = inference::SegmentationJob::Create(std::move(volume), running->plan(), options);
  if (!job.ok()) return Fail(job.status());
  job_ = std::move(*job);
  state_->metrics().JobCreated(running->name(), options.device);
  StageDone(unetrpp::v1::STAGE_PREPROCESSING, t);
  if (span_.recording()) {
    tracing::Span preprocess = StageSpan("preprocess", preprocess_begin_);
    const inference::StageTimes times = job_->timings();
    preprocess.SetAttribute("upp.crop_seconds", times.crop);
    preprocess.SetAttribute("upp.resample_seconds", times.resample);
    preprocess.SetAttribute("upp.normalize_seconds", times.normalize);
    preprocess.End(absl::Now());
  }
  const int64_t items = job_->num_items();
  stats_.windows_total += items;
  if (locating_) stats_.locator_windows = items;
  if (!locating_) stats_.SetSkipped(job_->items_skipped_by_crop(), job_->crop_report().reason);
  if (auto s = reservation_.AddWindows(items, running->batcher().queued_windows()); !s.ok()) return Fail(s);
  if (!Alive()) return;
  first_read_ns_ = 0;
  first_stitch_ns_ = 0;
  enqueued_at_ = absl::Now();
  SendProgress(unetrpp::v1::STAGE_INFERENCE, 0, true);
  running->batcher().Enqueue(shared_from_this(), items);
  state_->metrics().SetQueuedWindows(running->name(), running->batcher().queued_windows());
}

absl::Status SegmentCall::ReadWindow(int64_t item, float* dst) {
  if (!Alive()) return absl::CancelledError("the request ended");
  if (first_window_.exchange(false)) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - enqueued_at_);
    stats_.SetStageSeconds("queue_wait", seconds);
    state_->metrics().Stage(Running()->name(), "queue_wait", seconds);
  }
  if (int64_t none = 0; first_read_ns_.load() == 0 && first_read_ns_.compare_exchange_strong(none, NowNs()))
    TraceStage("queue_wait", enqueued_at_, absl::FromUnixNanos(first_read_ns_.load()));
  try {
    return job_->GetInput(item, dst);
  } catch (const std::exception&) {
    return absl::InternalError("an unexpected error reading a window");
  }
}

void SegmentCall::WindowDone(int64_t item, const float* logits) {
  if (!Alive()) return;
  if (int64_t none = 0; first_stitch_ns_.load() == 0) first_stitch_ns_.compare_exchange_strong(none, NowNs());
  absl::StatusOr<bool> done;
  try {
    done = job_->AddOutput(item, logits);
  } catch (const std::exception&) {
    done = absl::InternalError("an unexpected error stitching a window");
  }
  if (!done.ok()) return Fail(done.status());
  const int64_t windows_done = ++stats_.windows_done;
  // Not job_: once another thread has added the last window, Postprocess
  // may already have released it.
  SendProgress(unetrpp::v1::STAGE_INFERENCE, static_cast<double>(windows_done) / stats_.windows_total, *done);
  if (*done) {
    if (!locating_) StageDone(unetrpp::v1::STAGE_INFERENCE, enqueued_at_);
    // The windows' stitching runs on the threads that receive their logits,
    // between the first and the last; its CPU time is the span's attribute.
    const absl::Time now = absl::Now();
    TraceStage("inference", absl::FromUnixNanos(first_read_ns_.load()), now);
    if (span_.recording()) {
      tracing::Span stitch = StageSpan("stitch", absl::FromUnixNanos(first_stitch_ns_.load()));
      stitch.SetAttribute("upp.busy_seconds", job_->timings().stitch);
      stitch.End(now);
    }
    ScheduleGuarded(state_->cpu_pool(), &SegmentCall::Postprocess);
  }
}

void SegmentCall::WindowsFailed(const absl::Status& status) {
  if (Alive()) Fail(status);
}

void SegmentCall::Postprocess() {
  if (!Alive()) return;
  absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_POSTPROCESSING, 0, true);
  auto labels = job_->Finish();
  // After Finish(): its times too.
  const inference::StageTimes times = job_->timings();
  ReleaseJob();  // accumulators and the network input go back now
  if (!labels.ok()) return Fail(labels.status());
  if (span_.recording()) {
    // Finish(): back to the input grid, then argmax and paste.
    tracing::Span back = StageSpan("back_resample", t);
    back.SetAttribute("upp.resample_back_seconds", times.resample_back);
    back.SetAttribute("upp.argmax_paste_seconds", times.argmax_paste);
    back.End(absl::Now());
  }
  stats_.SetStageSeconds("stitch", times.stitch);
  state_->metrics().Stage(Running()->name(), "stitch", times.stitch);
  if (locating_) return AfterLocating(*std::move(labels));
  StageDone(unetrpp::v1::STAGE_POSTPROCESSING, t);
  SendResult(*std::move(labels));
}

void SegmentCall::AfterLocating(inference::LabelMap located) {
  preprocess_begin_ = absl::Now();
  locating_ = false;
  imageio::Volume volume = *std::move(held_);
  held_.reset();
  inference::JobOptions options = JobOptionsFor(header_, speed_, model()->entry());
  // `fast` tiles the labels' box with windows of its own; `full` runs the
  // whole run's windows around it (its labels exactly).
  if (!inference::AimAtLabels(located, speed_.label_values, speed_.margin_mm,
                              speed_.mode == unetrpp::v1::SPEED_MODE_FAST, &options))
    return SendResult(std::move(located));  // none of them: all background
  StartJob(std::move(volume), options);
}

void SegmentCall::SendResult(inference::LabelMap labels) {
  const absl::Time t = absl::Now();
  SendProgress(unetrpp::v1::STAGE_ENCODING, 0, true);
  if (!speed_.label_values.empty()) inference::KeepLabels(speed_.label_values, &labels);
  EncodingContext context;
  context.input = &input_;
  context.labels = KeptLabelTable(model()->plan().labels, speed_.label_values);
  context.algorithm = {"UNETR++ " + model()->name(), model()->version(), "weights_sha256=" + model()->weights_sha256()};
  auto result = EncodeResult(labels, header_.outputs(), context);
  if (!result.ok()) return Fail(result.status());
  auto* made_by = result->header.mutable_result_header();  // the version this request ran on
  made_by->set_model(model()->name());
  made_by->set_model_version(model()->version());
  made_by->set_weights_sha256(model()->weights_sha256());
  StageDone(unetrpp::v1::STAGE_ENCODING, t);
  send_begin_ = absl::Now();
  TraceStage("encode", t, send_begin_);
  std::string().swap(input_.dicom_source_instance);
  // Only the results remain: the reservation shrinks to them and the windows
  // go back, so that a client that reads slowly holds what it really holds.
  reservation_.ShrinkBytesTo(result->bytes);
  reservation_.ReleaseWindows();
  writer_.SendResults(std::move(result->header), std::move(result->outputs), Summary());
}

SegmentResponse SegmentCall::Summary() {
  SegmentResponse m;
  auto* s = m.mutable_summary();
  s->set_server_request_id(request_id_);
  s->set_client_request_id(header_.client_request_id());
  stats_.FillSummary(s);
  return m;
}

// ------------------------------------------------------------------- writing

ResponseWriter::Stream SegmentCall::WriterStream() {
  ResponseWriter::Stream stream;
  stream.start_write = [this](const SegmentResponse* message) {
    if (message->has_result_chunk())
      state_->metrics().BytesOut(static_cast<int64_t>(message->result_chunk().data().size()));
    StartWrite(message);
  };
  stream.finish = [this](const grpc::Status& status, std::optional<absl::Duration> retry_after) {
    // The header can no longer come: the slot is free before the client sees
    // the status (a client that retries at once must find it free).
    ReleasePendingStream();
    if (retry_after) proto::AddRetryAfterTrailer(*context_, *retry_after);
    Finish(status);
  };
  return stream;
}

void SegmentCall::SendProgress(Stage stage, double fraction, bool force) {
  const int64_t now_ns = NowNs();
  if (!force && now_ns - last_progress_ns_.load() < absl::ToInt64Nanoseconds(kProgressInterval)) return;
  last_progress_ns_ = now_ns;
  SegmentResponse m;
  auto* p = m.mutable_progress();
  p->set_stage(stage);
  p->set_fraction(fraction);
  p->set_bytes_received(bytes_received_);
  if (const int64_t total = stats_.windows_total.load(); stage == unetrpp::v1::STAGE_INFERENCE && total > 0) {
    p->set_windows_done(stats_.windows_done.load());
    p->set_windows_total(total);
  }
  writer_.SendProgress(std::move(m));
}

void SegmentCall::OnWriteDone(bool ok) {
  UPP_REACTION();
  writer_.OnWriteDone(ok);
}

void SegmentCall::ReleasePendingStream() {
  if (pending_stream_.exchange(false)) pending_.Release();
}

void SegmentCall::Fail(const absl::Status& status) {
  alive_ = false;
  if (model()) model()->batcher().Remove(this);
  if (writer_.Fail(status) && status.code() == absl::StatusCode::kInternal)
    spdlog::error("request {}: internal error: {}", request_id_, std::string(status.message()));
}

void SegmentCall::CheckTimeouts(absl::Time now) {
  CallState call;
  call.phase = phase_.load();
  call.decided = writer_.Decided();
  call.start = start_;
  call.last_read = absl::FromUnixNanos(last_read_ns_.load());
  if (const int64_t ns = writer_.write_started_ns(); ns > 0) call.write_started = absl::FromUnixNanos(ns);
  if (auto s = ExpiredTimeout(config_->timeouts(), call, now); !s.ok()) Abandon(s);
}

void SegmentCall::Abandon(const absl::Status& status) {
  if (writer_.Closed()) return;
  const bool writing = writer_.Writing();
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
  stats_.SetStageSeconds(proto::StageName(stage), seconds);
}

tracing::Span SegmentCall::StageSpan(std::string_view name, absl::Time begin) const {
  if (!span_.recording()) return tracing::Span();  // tracing off, or not sampled: nothing to make
  tracing::Span stage = span_.StartChild(name, begin);
  if (locator_) stage.SetAttribute("upp.pass", locating_.load() ? "locate" : "segment");
  return stage;
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
  const absl::Status status = writer_.Done();
  // Counted until the destructor: when a task still holds the call (a
  // decode that cannot be interrupted), that is after this reaction.
  orphaned_ = true;
  state_->AddOrphaned(1);
  if (const double send = writer_.send_seconds(); send >= 0) {
    stats_.SetStageSeconds("send", send);
    state_->metrics().Stage(model()->name(), "send", send);
    TraceStage("send", send_begin_, send_begin_ + absl::Seconds(send));
  }
  std::shared_ptr<SegmentCall> keep = std::move(self_);  // this reaction is the last use of it
  const FinishedRequest record = Record(status);
  EndSpan(record);
  state_->metrics().RequestFinished(record.model, absl::StatusCodeToString(status.code()), record.seconds);
  // A stream its client reset before sending a header asked for nothing: at
  // info level, an HTTP/2 rapid-reset flood would write two lines per stream
  // (the metric above still counts it).
  if (phase_ == Phase::kHeader && absl::IsCancelled(status)) {
    LogWithFields(spdlog::level::debug, RequestLogFields(record), RequestLogText(record));
    return;
  }
  LogWithFields(spdlog::level::info, RequestLogFields(record), RequestLogText(record));
  state_->Audit(AuditRecord(record, absl::Now()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

FinishedRequest SegmentCall::Record(const absl::Status& status) {
  FinishedRequest r;
  r.request_id = request_id_;
  r.client_request_id = header_.client_request_id();
  r.model = model() ? model()->name() : "-";
  r.peer = peer_;
  r.principal = principal_.name;
  r.input_bytes = bytes_received_;
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  r.status = status;
  stats_.FillRecord(&r);
  r.trace_id = span_.TraceId();
  return r;
}

void SegmentCall::EndSpan(const FinishedRequest& r) {
  // Counts, sizes and names the server chose; never a patient attribute,
  // a UID, a file name or a client-chosen id.
  span_.SetAttribute("upp.request_id", r.request_id);
  span_.SetAttribute("upp.model", r.model);
  span_.SetAttribute("upp.input_bytes", r.input_bytes);
  span_.SetAttribute("upp.voxels", r.voxels);
  span_.SetAttribute("upp.windows", r.windows);
  span_.SetAttribute("upp.windows_skipped", r.windows_skipped);
  span_.SetAttribute("rpc.grpc.status_code", static_cast<int64_t>(r.status.code()));
  span_.SetStatus(r.status);
  span_.End();
}

}  // namespace upp::server
