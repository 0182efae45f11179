// unetrpp-dicom-gateway: receives DICOM series (C-STORE), has the
// segmentation service segment those that match a routing rule, and sends
// the DICOM SEG and a TID 1500 volume report to the configured AE.
//   unetrpp-dicom-gateway --config gateway.textproto [--check-config]
// SIGTERM/SIGINT: stop accepting associations, finish the associations and
// the series in flight (at most drain_grace_seconds), exit 0; what was not
// started stays in the spool for the next start.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <future>
#include <thread>

#include "gateway/config.h"
#include "gateway/metrics.h"
#include "gateway/processor.h"
#include "gateway/qido_poll.h"
#include "gateway/spool.h"
#include "gateway/store_scp.h"
#include "gateway/stow_rs.h"
#include "tracing/server_tracing.h"

namespace {

// The spool holds patient images: a core dump would copy them anywhere.
void DisableCoreDumps() {
  struct rlimit none {};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

// Blocks SIGTERM and SIGINT in this thread and every thread started after
// (no library here starts threads before main), so sigwait() receives them.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("unetrpp-dicom-gateway: DICOM C-STORE in, segmentation out (SEG and volume report)");
  std::string config_path;
  bool check_only = false;
  app.add_option("--config", config_path, "gateway configuration (protobuf text)")->required();
  app.add_flag("--check-config", check_only, "validate the configuration and exit (0: valid)");
  CLI11_PARSE(app, argc, argv);
  DisableCoreDumps();
  // DCMTK's own log: the network's warnings and errors only (its INFO lines
  // narrate every C-STORE; the gateway logs per series). Its data-set parser
  // can quote element values in warnings and errors: fatal only there, as in
  // the server (the gateway says itself which instance was refused).
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  OFLog::getLogger("dcmtk.dcmdata").setLogLevel(OFLogger::FATAL_LOG_LEVEL);
  const sigset_t stop_signals = BlockStopSignals();

  auto config = upp::gateway::LoadConfig(config_path);
  if (!config.ok()) {
    spdlog::error("{}", std::string(config.status().message()));
    return 2;
  }
  // Files belong to the machine the gateway runs on (a Kubernetes secret is
  // mounted only in its pod): --check-config warns, a start refuses.
  if (auto s = upp::gateway::CheckFilesReadable(*config); !s.ok()) {
    if (!check_only) {
      spdlog::error("{}: {}", config_path, std::string(s.message()));
      return 2;
    }
    spdlog::warn("{}: {} (here; the gateway will not start where they are missing)", config_path,
                 std::string(s.message()));
  }
  if (check_only) {
    spdlog::info("{}: valid ({} routing rules)", config_path, config->rules_size());
    return 0;
  }
  auto spool = upp::gateway::Spool::Create(config->spool_dir());
  if (!spool.ok()) {
    spdlog::error("{}", std::string(spool.status().message()));
    return 1;
  }
  upp::gateway::GatewayMetrics metrics;
  for (const auto& rule : config->rules()) metrics.AddRule(rule.name());
  metrics.WatchSpool(config->spool_dir(), config->listener().min_free_spool_bytes());
  if (config->metrics_address() != "off") {
    if (auto s = metrics.Expose(config->metrics_address()); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }
  upp::gateway::StoreScp scp(
      config->listener(), spool->get(), [&metrics](const std::string& outcome) { metrics.Instance(outcome); },
      [&metrics](const std::string& reason) { metrics.AssociationRejected(reason); });
  // DICOMweb (STOW-RS, and pulls by WADO-RS) beside C-STORE, into the same
  // spool (dicomweb.port set).
  std::unique_ptr<upp::gateway::StowServer> stow;
  if (config->dicomweb().port() != 0) {
    auto created = upp::gateway::StowServer::Create(
        *config, spool->get(),
        [&metrics](const std::string& transport, const std::string& outcome) {
          metrics.DicomWebInstance(transport, outcome);
        },
        [&metrics](const std::string& endpoint, int status) { metrics.DicomWebRequest(endpoint, status); });
    absl::Status s = created.ok() ? (*created)->Bind() : created.status();
    if (!s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
    stow = *std::move(created);
  }
  // Pulls without a caller: QIDO-RS searches of the sources that set poll.
  std::unique_ptr<upp::gateway::QidoPoller> poller;
  if (stow && upp::gateway::QidoPoller::AnyPolled(config->dicomweb())) {
    auto created =
        upp::gateway::QidoPoller::Create(config->dicomweb(), spool->get()->root() + "/polled",
                                         [&stow](int index, const std::string& study, const std::string& series) {
                                           return stow->Pull(index, study, series).status();
                                         });
    if (!created.ok()) {
      spdlog::error("{}", std::string(created.status().message()));
      return 1;
    }
    poller = *std::move(created);
  }
  // A trace per series (gateway/processor.h), when tracing.endpoint or
  // OpenTelemetry's endpoint variable is set.
  if (auto options = upp::tracing::OptionsFromConfig(config->tracing()); options.ok() && !options->endpoint.empty()) {
    auto tracer = upp::tracing::Tracer::Create(*options);
    if (!tracer.ok()) {
      spdlog::error("tracing: {}", std::string(tracer.status().message()));
      return 1;
    }
    upp::tracing::InstallTracer(std::move(*tracer));
    spdlog::info("tracing: OTLP to {} as {}, sampling ratio {}", options->endpoint, options->service_name,
                 options->sampling_ratio);
  }
  upp::gateway::Processor processor(*config, spool->get(), &metrics);
  auto listening = std::async(std::launch::async, [&scp] { return scp.Run(); });
  std::thread stow_serving;
  if (stow) stow_serving = std::thread([&stow] { stow->Run().IgnoreError(); });
  std::thread polling;
  if (poller) polling = std::thread([&poller] { poller->Run(); });
  std::thread processing([&processor] { processor.Run(); });
  const auto& destination = config->destination();
  spdlog::info(
      "unetrpp-dicom-gateway: AE {} on port {} (DICOM), DICOMweb {}, metrics {}, service {}, destination {}",
      config->listener().ae_title(), config->listener().port(),
      stow ? std::to_string(stow->port()) + (config->dicomweb().tls().cert_file().empty() ? " (http)" : " (https)")
           : "off",
      metrics.port() ? std::to_string(metrics.port()) : "off", config->service().target(),
      destination.dicomweb().url().empty()
          ? destination.ae_title() + "@" + destination.host() + ":" + std::to_string(destination.port()) + " (C-STORE)"
          : "by STOW-RS (DICOMweb)");
  if (config->listener().allowed_peers().empty())
    spdlog::warn(
        "listener.allowed_peers is empty: {}; list the PACS' AE titles with their networks",
        config->listener().allowed_calling_aes().empty() ? "any peer may store" : "the calling AE title alone admits");

  // Wait for a stop signal, or for the listener to fail (port taken).
  int signal_number = 0;
  while (listening.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    const timespec tick{1, 0};
    siginfo_t info;
    if ((signal_number = sigtimedwait(&stop_signals, &info, &tick)) > 0) break;
  }
  spdlog::info(
      signal_number > 0 ? "signal {}: finishing the associations and the series in flight" : "listener stopped{}",
      signal_number > 0 ? std::to_string(signal_number) : "");
  scp.Stop();
  if (poller) {
    poller->Stop();  // a search or pull under way finishes first
    polling.join();
  }
  if (stow) {
    stow->Stop();  // requests in flight finish (cpp-httplib joins its threads)
    stow_serving.join();
  }
  processor.Stop();
  const auto grace = std::chrono::duration<double>(config->drain_grace_seconds());
  absl::Status listener_status = absl::OkStatus();
  if (listening.wait_for(grace) == std::future_status::ready) listener_status = listening.get();
  processing.join();  // returns after the series in flight
  if (!listener_status.ok()) {
    spdlog::error("{}", std::string(listener_status.message()));
    return 1;
  }
  upp::tracing::InstallTracer(nullptr);  // exports the spans still queued (up to export_timeout)
  spdlog::info("stopped");
  return 0;
}
