// upp-client: the command-line client of unetrpp-serve.
//
//   upp-client [--server HOST:PORT] segment INPUT... [-o labels.nii.gz] [--seg out.dcm]
//              [--png overview.png] [--model NAME] [--series UID] [--mirror] [--deadline SECONDS]
//              [--mode full|fast|fastest] [--labels NAME,...] [--json stats.json]
//              [--traceparent W3C [--tracestate STATE]]   (else $TRACEPARENT, $TRACESTATE)
//   upp-client [--server HOST:PORT] models
//   upp-client [--server HOST:PORT] --token ADMIN_KEY load-model NAME [--version V] [--keep-previous]
//              [--drain-then-load]
//   upp-client [--server HOST:PORT] --token ADMIN_KEY unload-model NAME VERSION
//   upp-client [--server HOST:PORT] health [--service NAME]
//
// INPUT: a NIfTI file (several: one per channel), a directory of DICOM files
// (files that are not DICOM, e.g. a README, are skipped and counted), or
// DICOM files named one by one.
// Only the outputs asked for are requested, and every output path is checked
// for writing before anything is sent.
// Exit codes: 0 done; 1 bad usage, unreadable input, an output that cannot be
// written, or TLS on one side only (--tls-ca missing or wrong); 2 the server refused
// the request (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNIMPLEMENTED,
// RESOURCE_EXHAUSTED for a request over a per-request limit);
// 3 the server is unavailable or busy (UNAVAILABLE, RESOURCE_EXHAUSTED with the
// server's retry hint: retry);
// 4 deadline exceeded or cancelled; 5 any other failure (INTERNAL, DATA_LOSS, ...);
// health: 6 when the server answers NOT_SERVING.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "clients/cpp/client.h"
#ifdef UPP_HAVE_OVERVIEW
#include "clients/cpp/overlay.h"
#endif
#include "imageio/dicom.h"
#include "imageio/file_util.h"
#include "imageio/labels.h"
#include "imageio/nifti.h"
#include "proto/api.h"

namespace {

namespace fs = std::filesystem;

int ExitCode(const absl::Status& s) {
  if (upp::client::IsTransportMismatch(s)) return 1;
  switch (s.code()) {
    case absl::StatusCode::kOk: return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kOutOfRange: return 2;
    case absl::StatusCode::kResourceExhausted: return upp::proto::RetryAfter(s) ? 3 : 2;
    case absl::StatusCode::kUnavailable: return 3;
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled: return 4;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied: return 7;
    default: return 5;
  }
}

int Fail(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kUnauthenticated)
    std::fprintf(stderr, "upp-client: the server wants a valid credential (--token, --token-file or $UPP_TOKEN)\n");
  if (s.code() == absl::StatusCode::kPermissionDenied)
    std::fprintf(stderr, "upp-client: the credential is valid but its roles do not allow this call\n");
  std::fprintf(stderr, "upp-client: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  if (auto after = upp::proto::RetryAfter(s))
    std::fprintf(stderr, "upp-client: the server suggests a retry in %lld s\n",
                 static_cast<long long>(absl::ToInt64Seconds(*after)));
  return ExitCode(s);
}

// A progress bar on a terminal, one line per stage change otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(isatty(STDERR_FILENO)) {}
  ~ProgressPrinter() {
    if (tty_ && drawn_) std::fprintf(stderr, "\n");
  }
  void operator()(const unetrpp::v1::Progress& p) {
    const bool windows = p.windows_total() > 0;
    if (tty_) {
      const int width = 30, filled = static_cast<int>(p.fraction() * width + 0.5);
      std::string bar(filled, '#');
      bar.resize(width, '.');
      std::fprintf(stderr, "\r%-15s [%s] %3.0f%%", upp::proto::StageName(p.stage()), bar.c_str(), 100 * p.fraction());
      if (windows)
        std::fprintf(stderr, "  windows %llu/%llu", static_cast<unsigned long long>(p.windows_done()),
                     static_cast<unsigned long long>(p.windows_total()));
      std::fprintf(stderr, "   ");
      drawn_ = true;
    } else if (p.stage() != last_stage_ || (windows && p.fraction() >= next_report_)) {
      if (p.stage() != last_stage_) next_report_ = 0.25;
      std::fprintf(stderr, "%s", upp::proto::StageName(p.stage()));
      if (windows)
        std::fprintf(stderr, " %llu/%llu windows", static_cast<unsigned long long>(p.windows_done()),
                     static_cast<unsigned long long>(p.windows_total()));
      std::fprintf(stderr, "\n");
      if (windows)
        while (next_report_ <= p.fraction()) next_report_ += 0.25;
    }
    last_stage_ = p.stage();
  }

 private:
  bool tty_;
  bool drawn_ = false;
  unetrpp::v1::Stage last_stage_ = unetrpp::v1::STAGE_UNSPECIFIED;
  double next_report_ = 0.25;
};

struct SegmentArgs {
  std::vector<std::string> inputs;
  std::string output, seg, png, json_path, model, series, mode;
  std::string traceparent, tracestate;  // W3C trace context; else $TRACEPARENT, $TRACESTATE
  std::vector<std::string> labels;
  bool mirror = false;
  double deadline = 0;
  int attempts = 4;
};

int Health(upp::client::Client& client, const std::string& service) {
  auto ok = client.Healthy(service);
  if (!ok.ok()) return Fail(ok.status());
  std::printf("%s\n", *ok ? "SERVING" : "NOT_SERVING");
  return *ok ? 0 : 6;
}

// One model: its default version, labels, and each version's state.
void PrintModel(const unetrpp::v1::ModelInfo& m, bool is_default_model) {
  std::printf("%s%s  version %s  %s, %u channel(s), %d labels:", m.name().c_str(), is_default_model ? " (default)" : "",
              m.version().c_str(), m.modality().c_str(), m.input_channels(), m.labels_size());
  for (const auto& l : m.labels())
    if (l.value() != 0) std::printf(" %s", l.name().c_str());
  std::printf("\n");
  for (const auto& v : m.versions()) {
    std::printf("  version %s%s: %s since %s", v.version().c_str(), v.is_default() ? " (default)" : "",
                v.state().c_str(), v.state_since().c_str());
    if (v.load_seconds() > 0) std::printf(", loaded in %.2f s", v.load_seconds());
    if (!v.weights_sha256().empty()) std::printf(", sha256 %.12s", v.weights_sha256().c_str());
    if (!v.error().empty()) std::printf(", error: %s", v.error().c_str());
    std::printf("\n");
  }
}

int Models(upp::client::Client& client) {
  auto list = client.ListModels();
  if (!list.ok()) return Fail(list.status());
  for (const auto& m : list->models()) PrintModel(m, m.name() == list->default_model());
  return 0;
}

// load-model / unload-model (the admin role): the model's versions after
// the change, or why it was refused (a failed load leaves the old version
// serving).
struct ManageArgs {
  std::string name, version;
  bool keep_previous = false, drain_then_load = false;
};

int Manage(upp::client::Client& client, const ManageArgs& args, bool load) {
  absl::StatusOr<unetrpp::v1::ModelInfo> info = absl::UnknownError("");
  if (load) {
    unetrpp::v1::LoadModelRequest request;
    request.set_name(args.name);
    request.set_version(args.version);
    request.set_keep_previous(args.keep_previous);
    request.set_drain_then_load(args.drain_then_load);
    info = client.LoadModel(request);
  } else {
    info = client.UnloadModel(args.name, args.version);
  }
  if (!info.ok()) return Fail(info.status());
  PrintModel(*info, false);
  return 0;
}

// From the file's first bytes (imageio::LooksLikeDicom). A file that cannot
// be read, or is empty, is an error, not "not DICOM": skipping a damaged
// first or last slice would shorten the volume without a word.
absl::StatusOr<bool> FileLooksLikeDicom(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read " + path);
  std::string head(132, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  if (in.bad()) return absl::DataLossError("reading " + path + " failed");
  head.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  if (head.empty()) return absl::InvalidArgumentError(path + " is empty");
  return upp::imageio::LooksLikeDicom(head);
}

// The DICOM files of a directory: those that look like DICOM (as dcm2niix
// does, a README or a thumbnail beside the series is skipped, and said so).
absl::StatusOr<std::vector<std::string>> DicomFiles(const std::string& dir) {
  auto paths = upp::imageio::ListFiles(dir);
  if (!paths.ok()) return paths.status();
  std::vector<std::string> dicom, skipped;
  for (const auto& p : *paths) {
    auto is_dicom = FileLooksLikeDicom(p);
    if (!is_dicom.ok()) return is_dicom.status();
    (*is_dicom ? dicom : skipped).push_back(p);
  }
  if (!skipped.empty()) {
    std::fprintf(stderr, "upp-client: skipped %zu file(s) that are not DICOM, e.g. %s\n", skipped.size(),
                 fs::path(skipped.front()).filename().c_str());
  }
  if (dicom.empty()) return absl::InvalidArgumentError(dir + " holds no DICOM files");
  return dicom;
}

// The server names files by their place in the request ("file #3"): which
// path that is here, and, for a choice of series, how to see their UIDs.
void ExplainFileNumbers(const absl::Status& status, const std::vector<std::string>& paths) {
  const std::string message(status.message());
  for (size_t at = message.find("file #"); at != std::string::npos; at = message.find("file #", at + 1)) {
    size_t n = 0;
    for (size_t i = at + 6; i < message.size() && absl::ascii_isdigit(message[i]); ++i)
      n = n * 10 + static_cast<size_t>(message[i] - '0');
    if (n >= 1 && n <= paths.size()) std::fprintf(stderr, "upp-client: file #%zu is %s\n", n, paths[n - 1].c_str());
  }
  if (status.code() == absl::StatusCode::kFailedPrecondition && absl::StrContains(message, "image series"))
    std::fprintf(stderr, "upp-client: `dcmdump +P 0020,000e FILE` shows a file's SeriesInstanceUID for --series\n");
}

// Every path the user named for an output can be written: checked before
// the input is sent, so that minutes of inference are not thrown away.
absl::Status CheckWritable(const std::vector<std::string>& paths) {
  for (const auto& p : paths) {
    if (p.empty()) continue;
    const fs::path path(p);
    const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      return absl::InvalidArgumentError("cannot write " + p + ": no folder " + dir.string());
    if (fs::is_directory(path, ec)) return absl::InvalidArgumentError("cannot write " + p + ": it is a folder");
    const bool exists = fs::exists(path, ec);
    if (access(exists ? p.c_str() : dir.c_str(), W_OK) != 0)
      return absl::InvalidArgumentError("cannot write " + p + ": permission denied");
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError("writing " + path + " failed");
  return absl::OkStatus();
}

std::map<uint32_t, const unetrpp::v1::Label*> LabelsByValue(const unetrpp::v1::ResultHeader& header) {
  std::map<uint32_t, const unetrpp::v1::Label*> names;
  for (const auto& l : header.labels()) names[l.value()] = &l;
  return names;
}

// What of the input the server segmented: the series, and what it left out.
void ReportInput(const unetrpp::v1::InputSummary& input, nlohmann::json& j) {
  if (!input.series_instance_uid().empty()) {
    std::fprintf(stderr, "upp-client: segmented series %s (%u instances)\n", input.series_instance_uid().c_str(),
                 input.instances_used());
    j["input"]["series_instance_uid"] = input.series_instance_uid();
  }
  j["input"]["instances_used"] = input.instances_used();
  for (const auto& s : input.skipped()) {
    std::fprintf(stderr, "upp-client: the server left out %u instance(s): %s\n", s.count(), s.reason().c_str());
    j["input"]["skipped"][s.reason()] = s.count();
  }
}

// Prints the per-label volumes; writes them with the timings as JSON.
absl::Status ReportVolumes(const upp::client::SegmentResult& result, const std::string& json_path) {
  const auto& header = result.header;
  const auto names = LabelsByValue(header);
  nlohmann::json j;
  j["server_request_id"] = result.server_request_id;
  ReportInput(header.input(), j);
  std::printf("%-28s %12s %12s\n", "label", "voxels", "volume (mL)");
  for (const auto& v : header.volumes()) {
    if (v.value() == 0) continue;
    const std::string name = names.count(v.value()) ? names.at(v.value())->name() : std::to_string(v.value());
    std::printf("%-28s %12llu %12.1f\n", name.c_str(), static_cast<unsigned long long>(v.voxels()), v.volume_ml());
    j["labels"].push_back({{"value", v.value()}, {"name", name}, {"voxels", v.voxels()}, {"volume_ml", v.volume_ml()}});
  }
  for (const auto& t : result.summary.timings()) j["seconds"][upp::proto::StageName(t.stage())] = t.seconds();
  for (int i = 0; i < header.outputs_size(); ++i)
    j["outputs"][unetrpp::v1::OutputKind_Name(header.outputs(i))] = header.output_bytes(i);
  return json_path.empty() ? absl::OkStatus() : WriteFile(json_path, j.dump(1) + "\n");
}

// The overview picture: the input decoded locally (the labels share its grid).
int WriteOverview(const upp::client::SegmentResult& result, const std::vector<std::string>& paths, bool dicom,
                  const std::string& png) {
#ifndef UPP_HAVE_OVERVIEW
  (void)result, (void)paths, (void)dicom, (void)png;
  return Fail(absl::UnimplementedError("this upp-client was built without cairo (UPP_WITH_CAIRO=OFF): no --png"));
#else
  const auto& header = result.header;
  const auto names = LabelsByValue(header);
  // Decode the input locally for the picture (the labels share its grid).
  absl::StatusOr<upp::imageio::Volume> volume = absl::UnknownError("");
  std::vector<std::string> files;
  for (const auto& p : paths) {
    auto bytes = upp::imageio::ReadWholeFile(p);
    if (!bytes.ok()) return Fail(bytes.status());
    files.push_back(std::move(*bytes));
  }
  if (dicom) {
    upp::imageio::DicomSeriesOptions o;
    o.modalities.clear();
    o.series_instance_uid = header.input().series_instance_uid();
    auto d = upp::imageio::ReadDicomSeries(std::vector<std::string_view>(files.begin(), files.end()), o);
    volume = d.ok() ? absl::StatusOr<upp::imageio::Volume>(std::move(d->volume)) : d.status();
  } else {
    auto n = upp::imageio::ReadNifti(files[0]);
    volume = n.ok() ? absl::StatusOr<upp::imageio::Volume>(std::move(n->volume)) : n.status();
  }
  if (!volume.ok()) return Fail(volume.status());
  const std::string& raw = result.outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  const std::vector<uint16_t> labels = upp::imageio::DecodeRawLabels(raw);
  std::vector<upp::client::OverlayLabel> legend;
  for (const auto& v : header.volumes()) {
    upp::client::OverlayLabel l;
    l.value = static_cast<int>(v.value());
    l.volume_ml = v.volume_ml();
    if (names.count(v.value())) {
      l.name = names.at(v.value())->name();
      const std::string& rgb = names.at(v.value())->rgb();
      for (size_t k = 0; k < 3 && k < rgb.size(); ++k) l.rgb[k] = static_cast<uint8_t>(rgb[k]);
    }
    legend.push_back(l);
  }
  auto picture = upp::client::RenderOverlayPng(*volume, labels, legend);
  if (!picture.ok()) return Fail(picture.status());
  if (auto s = WriteFile(png, *picture); !s.ok())
    return std::fprintf(stderr, "upp-client: %s\n", s.ToString().c_str()), 1;
  return 0;
#endif
}

int Segment(upp::client::Client& client, const SegmentArgs& args) {
  upp::client::SegmentOptions options;
  options.model = args.model;
  options.mirror = args.mirror;
  options.series_instance_uid = args.series;
  options.labels = args.labels;
  if (!args.mode.empty()) {
    const auto mode = upp::proto::SpeedModeFromName(args.mode);
    if (!mode)
      return std::fprintf(stderr, "upp-client: --mode takes full, fast or fastest, not %s\n", args.mode.c_str()), 1;
    options.mode = *mode;
  }
  if (args.deadline > 0) options.deadline = absl::Seconds(args.deadline);
  options.max_attempts = std::max(1, args.attempts);
  const auto usage = [](const std::string& what) { return std::fprintf(stderr, "upp-client: %s\n", what.c_str()), 1; };
  // The OpenTelemetry convention for a process's parent context: a script
  // that traces itself exports TRACEPARENT for the tools it runs.
  const char* env_traceparent = std::getenv("TRACEPARENT");
  const char* env_tracestate = std::getenv("TRACESTATE");
  options.traceparent = !args.traceparent.empty() ? args.traceparent : env_traceparent ? env_traceparent : "";
  options.tracestate = !args.tracestate.empty() ? args.tracestate : env_tracestate ? env_tracestate : "";
  if (!options.traceparent.empty())
    if (auto s = upp::client::CheckTraceParent(options.traceparent); !s.ok()) return usage(std::string(s.message()));
  for (const auto& in : args.inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) return usage("cannot read " + in + ": no such file or folder");
    if (args.inputs.size() > 1 && fs::is_directory(in, ec))
      return usage(in + " is a folder: give a DICOM folder alone");
  }
  // A folder, or DICOM files named one by one (series/*.dcm): a DICOM series.
  const bool dicom = (args.inputs.size() == 1 && fs::is_directory(args.inputs[0])) ||
                     std::all_of(args.inputs.begin(), args.inputs.end(),
                                 [](const std::string& in) { return FileLooksLikeDicom(in).value_or(false); });
  if (dicom) options.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  if (!args.series.empty() && !dicom) return usage("--series needs a DICOM folder");
  if (!args.seg.empty() && !dicom) return usage("--seg needs a DICOM input");
  if (auto s = CheckWritable({args.output, args.seg, args.png, args.json_path}); !s.ok())
    return usage(std::string(s.message()));
  std::vector<std::string> paths = args.inputs;
  if (dicom && fs::is_directory(args.inputs[0])) {
    auto found = DicomFiles(args.inputs[0]);
    if (!found.ok()) return usage(std::string(found.status().message()));
    paths = std::move(*found);
  }
  // Only what was asked for: the raw labels (2 bytes a voxel, 46 MB for a
  // CT) travel only for the picture.
  options.outputs.clear();
  if (!args.output.empty()) options.outputs.push_back(unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS);
  if (!args.seg.empty()) options.outputs.push_back(unetrpp::v1::OUTPUT_KIND_DICOM_SEG);
  if (!args.png.empty()) options.outputs.push_back(unetrpp::v1::OUTPUT_KIND_RAW_LABELS);
  // Nothing to write (volumes only): the smallest output, the compressed labels.
  if (options.outputs.empty()) options.outputs.push_back(unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS);
  absl::StatusOr<upp::client::SegmentResult> result = absl::UnknownError("");
  {
    ProgressPrinter progress;
    result = client.SegmentFiles(paths, options, [&](const unetrpp::v1::Progress& p) { progress(p); });
  }
  if (!result.ok()) {
    // A file that went away while being sent (they were all there before).
    if (result.status().code() == absl::StatusCode::kNotFound &&
        absl::StartsWith(result.status().message(), "cannot read input"))
      return usage(std::string(result.status().message()));
    const int code = Fail(result.status());
    ExplainFileNumbers(result.status(), paths);
    return code;
  }
  for (const auto& [path, kind] : {std::pair{args.output, unetrpp::v1::OUTPUT_KIND_NIFTI_LABELS},
                                   std::pair{args.seg, unetrpp::v1::OUTPUT_KIND_DICOM_SEG}}) {
    if (path.empty()) continue;
    if (auto s = WriteFile(path, result->outputs[kind]); !s.ok()) return usage(std::string(s.message()));
  }
  if (auto s = ReportVolumes(*result, args.json_path); !s.ok()) return usage(std::string(s.message()));
  return args.png.empty() ? 0 : WriteOverview(*result, paths, dicom, args.png);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"unetrpp-serve client"};
  app.require_subcommand(1);
  std::string server = "localhost:50051", token_file;
  upp::client::ConnectOptions connect;
  app.add_option("--server", server, "server address (host:port)");
  app.add_option("--tls-ca", connect.tls_ca_file, "CA certificate (PEM): connect with TLS");
  app.add_option("--tls-cert", connect.tls_cert_file, "client certificate (PEM) for mTLS");
  app.add_option("--tls-key", connect.tls_key_file, "client key (PEM) for mTLS");
  app.add_option("--server-name", connect.server_name, "the name in the server's certificate, if not the host");
  app.add_option("--token", connect.token, "bearer token (API key); also $UPP_TOKEN");
  app.add_option("--token-file", token_file, "file holding the bearer token");
  double wait = -1;
  app.add_option("--wait", wait,
                 "seconds to wait for the server to accept connections (default: 10; health: 0, for probes)");
  app.add_option("--lb", connect.load_balancing,
                 "\"round_robin\": spread calls over all addresses of the server name (headless service, "
                 "or ipv4:a:port,b:port)");

  auto* segment = app.add_subcommand("segment", "segment a volume");
  SegmentArgs args;
  segment->add_option("input", args.inputs, "NIfTI file(s) (one per channel) or a DICOM directory")->required();
  segment->add_option("-o,--output", args.output, "label map to write (.nii.gz)");
  segment->add_option("--seg", args.seg, "DICOM SEG to write (DICOM input)");
  segment->add_option("--png", args.png, "overview picture to write (PNG)");
  segment->add_option("--json", args.json_path, "per-label volumes and timings to write (JSON)");
  segment->add_option("--model", args.model, "model name (default: the server's)");
  segment->add_option("--series", args.series,
                      "DICOM: the SeriesInstanceUID to segment when the folder holds several series of one study");
  segment->add_flag("--mirror", args.mirror, "test-time mirroring along all axes (8x the work)");
  segment->add_option("--mode", args.mode, "full | fast | fastest (default: the model's; docs/server.md)");
  segment->add_option("--labels", args.labels, "only these labels, by name (e.g. --labels liver spleen)")
      ->delimiter(',');
  segment->add_option("--deadline", args.deadline, "give up after this many seconds");
  segment->add_option("--traceparent", args.traceparent,
                      "W3C traceparent the server's spans continue (default: $TRACEPARENT; docs/server.md Tracing)");
  segment->add_option("--tracestate", args.tracestate, "W3C tracestate sent with it (default: $TRACESTATE)");
  segment->add_option("--attempts", args.attempts, "tries on UNAVAILABLE (replica draining or down), with backoff")
      ->capture_default_str();

  auto* models = app.add_subcommand("models", "list the server's models");
  ManageArgs manage;
  auto* load_model =
      app.add_subcommand("load-model", "load a version beside the serving one and make it the default (admin)");
  load_model->add_option("name", manage.name, "model name")->required();
  load_model->add_option("--version", manage.version, "the version (default: the newest its source offers)");
  load_model->add_flag("--keep-previous", manage.keep_previous, "keep the previous default loaded");
  load_model->add_flag("--drain-then-load", manage.drain_then_load,
                       "when both versions do not fit in memory: stop the serving one first (requests are refused "
                       "meanwhile)");
  auto* unload_model = app.add_subcommand("unload-model", "unload a version once its requests are done (admin)");
  unload_model->add_option("name", manage.name, "model name")->required();
  unload_model->add_option("version", manage.version, "the version")->required();
  auto* health = app.add_subcommand("health", "check the server's health");
  std::string service;
  health->add_option("--service", service, "a service or \"unetrpp.v1.Segmentation/<model>\"");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }
  if (!token_file.empty()) {
    auto token = upp::imageio::ReadWholeFile(token_file, 1 << 16);
    if (!token.ok()) return std::fprintf(stderr, "upp-client: cannot read %s\n", token_file.c_str()), 1;
    connect.token = std::string(absl::StripAsciiWhitespace(*token));
  } else if (const char* env = std::getenv("UPP_TOKEN"); connect.token.empty() && env) {
    connect.token = env;
  }
  connect.wait_for_server = absl::Seconds(wait >= 0 ? wait : (*health ? 0 : 10));
  auto client = upp::client::Client::Connect(server, connect);
  if (!client.ok()) return Fail(client.status());
  if (*health) return Health(**client, service);
  if (*models) return Models(**client);
  if (load_model->parsed() || unload_model->parsed()) return Manage(**client, manage, load_model->parsed());
  return Segment(**client, args);
}
