#include "gateway/processor.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "clients/cpp/client.h"
#include "gateway/report.h"
#include "gateway/rules.h"
#include "gateway/sender_text.h"
#include "gateway/series.h"
#include "gateway/store_scu.h"
#include "gateway/stow_client.h"
#include "imageio/file_util.h"
#include "proto/api.h"
#include "tracing/server_tracing.h"

namespace upp::gateway {
namespace fs = std::filesystem;
namespace {

// How often kept series are checked against the retention limits.
constexpr absl::Duration kPruneInterval = absl::Minutes(1);

double SecondsSince(absl::Time t) { return absl::ToDoubleSeconds(absl::Now() - t); }

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::InternalError("spool: cannot write a result");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return ec ? absl::InternalError("spool: cannot write a result") : absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<client::Client>> Connect(const unetrpp::v1::SegmentationService& s) {
  client::ConnectOptions options;
  options.tls_ca_file = s.tls_ca_file();
  options.tls_cert_file = s.tls_cert_file();
  options.tls_key_file = s.tls_key_file();
  options.server_name = s.server_name();
  options.load_balancing = s.load_balancing();
  if (!s.token_file().empty()) {  // read at each series: a rotated token is picked up
    auto token = imageio::ReadWholeFile(s.token_file(), 1 << 16);
    if (!token.ok()) return absl::UnavailableError("the service token file cannot be read");
    options.token = std::string(absl::StripAsciiWhitespace(*token));
  }
  return client::Client::Connect(s.target(), options);
}

// When the series' first and last instances were written into the spool
// (their files' modification times): the receive span. Nothing when no
// file can be read.
std::optional<std::pair<absl::Time, absl::Time>> ArrivalTimes(const std::string& instances_dir) {
  std::optional<std::pair<absl::Time, absl::Time>> times;
  std::error_code ec;
  for (fs::directory_iterator it(instances_dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const absl::Time t = absl::TimeFromTimespec(st.st_mtim);
    if (!times) times.emplace(t, t);
    times->first = std::min(times->first, t);
    times->second = std::max(times->second, t);
  }
  return times;
}

const char* OutcomeName(Processor::Outcome outcome) {
  switch (outcome) {
    case Processor::Outcome::kCompleted: return "completed";
    case Processor::Outcome::kUnmatched: return "unmatched";
    case Processor::Outcome::kRetry: return "retry";
    case Processor::Outcome::kFailed: return "failed";
  }
  return "unknown";
}

// A failure's message as logs and failed/<series>/reason hold it: the
// service's and the gateway's own messages name no DICOM values, but a
// library's may quote what a sender wrote.
std::string LoggedMessage(const absl::Status& status) { return SenderText(status.message(), 1000); }

}  // namespace

bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted: return proto::RetryAfter(s).has_value();
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown: return true;
    default: return false;
  }
}

struct Processor::Attempt {
  std::string dir;   // the claimed series' active directory
  std::string name;  // for logs: the spool counter, not patient data
  SeriesSummary series;
  const unetrpp::v1::RoutingRule* rule = nullptr;
  std::string seg_path, report_path;
  // This attempt's trace (not recording when tracing is off): counts,
  // sizes, transport and outcome only, never a UID, a patient attribute,
  // an AE title or a file name.
  tracing::Span span;
  absl::Status status;  // the attempt's, for the Series span
};

Processor::Processor(const unetrpp::v1::GatewayConfig& config, Spool* spool, GatewayMetrics* metrics)
    : config_(config), spool_(spool), metrics_(metrics) {}

void Processor::Recover() {
  const int quarantined = spool_->RecoverInterrupted(static_cast<int>(config_.max_interrupted_attempts()));
  if (quarantined == 0) return;
  spdlog::error("{} series quarantined: the gateway died while processing each {} times (see quarantine/*/reason)",
                quarantined, config_.max_interrupted_attempts());
  for (int i = 0; i < quarantined; ++i) metrics_->Series("quarantined", "");
}

void Processor::Prune() {
  const auto& r = config_.retention();
  const auto pruned = spool_->Prune(absl::Seconds(r.max_age_seconds()), r.max_bytes(), absl::Now());
  if (pruned.series == 0) return;
  spdlog::info(
      "retention: deleted {} kept series ({} bytes) from failed/, unmatched/, quarantine/ (older than {} s, "
      "or over {} bytes together)",
      pruned.series, pruned.bytes, r.max_age_seconds(), r.max_bytes());
  metrics_->Pruned(pruned.series, pruned.bytes);
}

void Processor::Run() {
  const absl::Duration quiet = absl::Seconds(config_.quiet_period_seconds());
  Recover();
  absl::Time pruned_at = absl::InfinitePast();
  while (!stop_.HasBeenNotified()) {
    if (absl::Now() - pruned_at > kPruneInterval) {
      Prune();
      pruned_at = absl::Now();
    }
    for (const auto& dir : spool_->ClaimDue(quiet, absl::Now())) {
      if (stop_.HasBeenNotified()) break;
      metrics_->SetQueued(spool_->QueuedSeries());
      ProcessSeries(dir);
    }
    metrics_->SetQueued(spool_->QueuedSeries());
    stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
  }
}

Processor::Outcome Processor::ProcessSeries(const std::string& dir) {
  const absl::Time start = absl::Now();
  Attempt a;
  a.dir = dir;
  a.name = fs::path(dir).filename().string();
  a.seg_path = Spool::ResultsDir(dir) + "/seg.dcm";
  a.report_path = Spool::ResultsDir(dir) + "/report.dcm";
  const int attempts = Spool::ReadState(dir).attempts + 1;
  // A trace per attempt: the first begins when the series' first instance
  // arrived (its receive span up to the last one), a later one now.
  std::optional<std::pair<absl::Time, absl::Time>> arrived;
  const std::shared_ptr<tracing::Tracer> tracer = tracing::CurrentTracer();
  if (tracer && attempts == 1) arrived = ArrivalTimes(Spool::InstancesDir(dir));
  if (tracer) a.span = tracer->StartServerSpan("Series", {}, {}, arrived ? std::min(arrived->first, start) : start);
  a.span.SetAttribute("upp.attempt", int64_t{attempts});
  // The spool's name for the series, which every log line of it gives,
  // tied to its trace: a log line and a trace find each other.
  if (a.span.recording()) spdlog::info("series {}: attempt {} trace_id={}", a.name, attempts, a.span.TraceId());
  if (arrived) {
    tracing::Span receive = a.span.StartChild("receive", arrived->first);
    receive.End(arrived->second);
    // The spool's wait for completeness: from the last instance's arrival
    // until the series was judged complete (quiet_period_seconds without a
    // new instance) and claimed, behind the series claimed before it. Without
    // it the Series span had an unexplained gap of at least the quiet period.
    tracing::Span wait = a.span.StartChild("wait", arrived->second);
    wait.End(std::max(arrived->second, start));
  }
  const Outcome outcome = ProcessAttempt(a, attempts, start);
  a.span.SetAttribute("upp.outcome", OutcomeName(outcome));
  a.span.SetStatus(a.status);
  a.span.End();
  return outcome;
}

Processor::Outcome Processor::ProcessAttempt(Attempt& a, int attempts, absl::Time start) {
  const std::string& dir = a.dir;
  if (attempts == 1) metrics_->SeriesReceived();
  // Counted before the work: a series that kills the process still uses
  // up its attempts, and is quarantined at the next start (Recover).
  if (auto s = Spool::BeginAttempt(dir, attempts, start); !s.ok()) return Settle(dir, "", attempts, a.status = s);

  SeriesLimits limits;
  limits.max_instances = config_.max_series_instances();
  limits.max_bytes = static_cast<int64_t>(config_.max_series_bytes());
  limits.max_instance_bytes = static_cast<int64_t>(config_.listener().max_instance_bytes());
  auto series = SummarizeSeries(Spool::InstancesDir(dir), limits);
  metrics_->Stage("summarize", SecondsSince(start));
  if (!series.ok())  // a series that cannot be read or is over the limits will not be better next time
    return Settle(dir, "", attempts, a.status = absl::FailedPreconditionError(series.status().message()));
  a.series = *std::move(series);
  a.span.SetAttribute("upp.instances", static_cast<int64_t>(a.series.files.size()));
  a.span.SetAttribute("upp.bytes", a.series.bytes);
  a.rule = MatchRule(config_, a.series);
  if (!a.rule) {
    spdlog::info("series {}: {} instances, modality {}, matched no rule; {}", a.name, a.series.files.size(),
                 SenderText(a.series.modality), config_.unmatched() == "keep" ? "kept in unmatched/" : "dropped");
    metrics_->Series("unmatched", "");
    if (config_.unmatched() == "keep")
      spool_->Keep(dir, "unmatched", "matched no routing rule").IgnoreError();
    else
      spool_->Remove(dir).IgnoreError();
    return Outcome::kUnmatched;
  }
  absl::Status status;
  if (!fs::exists(a.seg_path) || !fs::exists(a.report_path)) status = SegmentAndReport(a);
  if (status.ok()) status = Send(a);
  if (status.ok()) {
    spdlog::info("series {}: {} instances, rule {}: SEG{} sent in {:.1f} s (attempt {})", a.name, a.series.files.size(),
                 a.rule->name(), a.rule->send_report() ? " and report" : "", SecondsSince(start), attempts);
    metrics_->SeriesLatency(SecondsSince(start));
  }
  a.status = status;
  return Settle(dir, a.rule->name(), attempts, status);
}

absl::Status Processor::SegmentAndReport(Attempt& a) {
  absl::Time t = absl::Now();
  tracing::Span segment = a.span.StartChild("segment", t);
  auto client = Connect(config_.service());
  if (!client.ok()) {
    segment.SetStatus(client.status());
    return client.status();
  }
  client::SegmentOptions options;
  // The server's Segment span becomes this span's child: one trace from
  // the series' arrival to its SEG's delivery.
  options.traceparent = segment.TraceParent();
  options.model = a.rule->model();
  // Checked when the configuration was read (gateway/config.cc).
  options.mode = proto::SpeedModeFromName(a.rule->mode()).value_or(unetrpp::v1::SPEED_MODE_UNSPECIFIED);
  options.labels.assign(a.rule->labels().begin(), a.rule->labels().end());
  options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_DICOM_SEG};
  options.deadline = absl::Seconds(config_.service().deadline_seconds());
  options.max_attempts = 3;  // quick retries within the call; the spool retries later
  options.client_request_id = absl::StrCat("gateway-", a.name);
  // A job is one spooled series: naming it has the service segment exactly
  // that one (and refuse the job if its files were of another).
  options.series_instance_uid = a.series.series_instance_uid;
  auto result = (*client)->SegmentFiles(a.series.files, options);
  metrics_->Stage("segment", SecondsSince(t));
  segment.SetStatus(result.status());
  if (!result.ok()) return result.status();
  const std::string& seg = result->outputs[unetrpp::v1::OUTPUT_KIND_DICOM_SEG];
  segment.SetAttribute("upp.seg_bytes", static_cast<int64_t>(seg.size()));
  segment.End();

  t = absl::Now();
  tracing::Span build = a.span.StartChild("build", t);
  std::map<int, std::string> names;
  for (const auto& l : result->header.labels()) names[static_cast<int>(l.value())] = l.name();
  ReportInput input;
  input.seg = seg;
  for (const auto& v : result->header.volumes()) input.volume_ml_by_segment_label[names[v.value()]] = v.volume_ml();
  // Its header only, parsed from the file (not read whole): one instance
  // may be up to max_instance_bytes of anything.
  input.source_path = a.series.files.front();
  input.max_source_bytes = static_cast<int64_t>(config_.listener().max_instance_bytes());
  input.source_series_uid = a.series.series_instance_uid;
  input.manufacturer = config_.report().manufacturer();
  input.series_description = config_.report().series_description();
  // The version the server ran, as its result header names it (the SEG
  // names it too): the report says which model measured the volumes.
  const auto& made_by = result->header;
  input.algorithm_name = "UNETR++ " + made_by.model();
  input.algorithm_version = made_by.model_version();
  if (!made_by.weights_sha256().empty()) input.algorithm_parameters = "weights_sha256=" + made_by.weights_sha256();
  spdlog::info("series {}: segmented by model {} version {} (weights sha256 {})", a.name, made_by.model(),
               made_by.model_version(), made_by.weights_sha256().substr(0, 12));
  auto report = WriteVolumeReport(input);
  metrics_->Stage("report", SecondsSince(t));
  absl::Status status = report.ok() ? absl::OkStatus() : absl::FailedPreconditionError(report.status().message());
  if (status.ok()) {
    build.SetAttribute("upp.report_bytes", static_cast<int64_t>(report->size()));
    std::error_code ec;
    fs::create_directories(Spool::ResultsDir(a.dir), ec);
    status = WriteFile(a.report_path, *report);
    if (status.ok()) status = WriteFile(a.seg_path, seg);
  }
  build.SetStatus(status);
  return status;
}

absl::Status Processor::Send(const Attempt& a) {
  const absl::Time t = absl::Now();
  tracing::Span span = a.span.StartChild("send", t);
  std::vector<std::string> files;
  if (a.rule->send_seg()) files.push_back(a.seg_path);
  if (a.rule->send_report()) files.push_back(a.report_path);
  const auto& destination = config_.destination();
  const bool c_store = destination.dicomweb().url().empty();
  span.SetAttribute("upp.transport", c_store ? "c-store" : "stow-rs");
  span.SetAttribute("upp.objects", static_cast<int64_t>(files.size()));
  auto status = c_store ? SendFiles(destination, files) : SendFilesStowRs(destination.dicomweb(), files);
  metrics_->Stage("send", SecondsSince(t));
  span.SetStatus(status);
  return status;
}

Processor::Outcome Processor::Settle(const std::string& dir, const std::string& rule, int attempts,
                                     const absl::Status& status) {
  const std::string name = fs::path(dir).filename().string();
  if (status.ok()) {
    metrics_->Series("completed", rule);
    spool_->Remove(dir).IgnoreError();
    return Outcome::kCompleted;
  }
  if (Retryable(status) && attempts < static_cast<int>(config_.max_attempts())) {
    const double backoff = std::min(300.0, config_.retry_backoff_seconds() * double(1 << std::min(attempts - 1, 16)));
    spdlog::warn("series {}: attempt {} of {} failed ({}); next in {:.0f} s", name, attempts, config_.max_attempts(),
                 LoggedMessage(status), backoff);
    metrics_->Series("retried", rule);
    Spool::WriteState(dir, {attempts, absl::ToUnixSeconds(absl::Now()) + static_cast<int64_t>(backoff)}).IgnoreError();
    Spool::EndAttempt(dir);
    return Outcome::kRetry;
  }
  spdlog::error("series {}: failed after {} attempt(s), nothing sent: {}", name, attempts, LoggedMessage(status));
  metrics_->Series("failed", rule);
  spool_->Keep(dir, "failed", LoggedMessage(status)).IgnoreError();
  return Outcome::kFailed;
}

}  // namespace upp::gateway
