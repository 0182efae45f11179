// unetrpp-serve: the gRPC segmentation server.
//
//   unetrpp-serve --config server.textproto [--listen ADDR] [--metrics ADDR]
//   unetrpp-serve --weights model.safetensors [--plan plan.json]   (one model, no file)
//
// SIGTERM / SIGINT: health NOT_SERVING, new calls UNAVAILABLE, in-flight
// calls get drain_grace_seconds, exit 0.
// SIGHUP: the configuration file is read again (and the flags applied to it
// again); its live fields take effect, what needs a restart is logged, and
// an invalid file changes nothing (Server::Reload).
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "model/cpu_threads.h"
#include "server/command_line.h"
#include "server/logging.h"
#include "server/open_files.h"
#include "server/server.h"

namespace {
int g_signal_pipe[2] = {-1, -1};

// A handler, not sigwait(): libraries start threads before main() (OpenBLAS)
// with the signals unblocked, so any thread may receive them. The handler
// only writes the signal number to a pipe (async-signal-safe); a thread
// reads it and reloads or drains.
bool InstallSignalPipe() {
  if (pipe(g_signal_pipe) != 0) return false;
  struct sigaction action {};
  action.sa_handler = [](int sig) {
    const int saved_errno = errno;  // the interrupted thread may be about to read it
    const char c = static_cast<char>(sig);
    (void)!write(g_signal_pipe[1], &c, 1);
    errno = saved_errno;
  };
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);

  return true;
}

// The project's default model (synthetic-CT phantom model,
// docs/model_card.md), for a start without configuration: from
// $UPP_DEFAULT_MODEL, the install's share/ directory, or the source tree.
std::vector<std::string> DefaultModelCandidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("UPP_DEFAULT_MODEL")) candidates.push_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back((exe.parent_path() / "../share/unetrpp-serve/phantom_ct_v1.safetensors").string());
  candidates.push_back(UPP_SOURCE_DIR "/model/weights/phantom_ct_v1.safetensors");
  return candidates;
}

void SetUpLogging(const unetrpp::v1::ServerConfig& config) {
  auto logger = spdlog::stdout_logger_mt("unetrpp-serve");
  if (config.logging().json()) logger->set_formatter(upp::server::JsonLogFormatter());
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.logging().level()));
  spdlog::flush_on(spdlog::level::info);
}

// Core files would hold the patient images in memory.
void HardenProcess(const unetrpp::v1::ServerConfig& config) {
  if (!config.allow_core_dumps()) {
    struct rlimit no_core {};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"unetrpp-serve: UNETR++ segmentation over gRPC"};
  upp::server::CommandLine f;
  app.add_option("--config", f.config_path, "server configuration (protobuf text format)");
  app.add_option("--listen", f.listen, "override listen_address, e.g. 0.0.0.0:50051");
  app.add_option("--metrics", f.metrics, "override metrics_address (\"off\" disables)");
  app.add_option(
      "--weights", f.weights,
      "serve this safetensors file as model \"default\", the default model (with --config: added to its models)");
  app.add_option("--plan", f.plan, "plan JSON for --weights");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error");
  app.add_flag("--log-json", f.log_json, "log JSON lines");
  app.add_flag("--allow-anonymous", f.allow_anonymous,
               "callers without a credential may segment (auth.allow_anonymous; without --config the default on a "
               "loopback address)");
  CLI11_PARSE(app, argc, argv);
  if (!InstallSignalPipe()) return 1;
  auto assembled = upp::server::AssembleConfig(f, DefaultModelCandidates());
  if (!assembled.ok()) {
    std::fprintf(stderr, "unetrpp-serve: %s\n", std::string(assembled.status().message()).c_str());
    return 2;
  }
  const unetrpp::v1::ServerConfig& config = *assembled;
  SetUpLogging(config);
  HardenProcess(config);
  const upp::server::OpenFileLimit files = upp::server::RaiseOpenFileLimit();
  const uint64_t needed = upp::server::DescriptorsNeeded(config);
  if (files.now != RLIM_INFINITY && files.now < needed)
    spdlog::warn(
        "open files: the process may hold {} descriptors (hard limit), a DICOM decode on every CPU thread needs up to "
        "{}: raise the container's nofile limit or lower limits.max_input_files",
        files.now, needed);
  const int threads = upp::model::ConfigureCpuThreads(static_cast<int>(config.intra_op_threads()));
  spdlog::info("cpu: {} intra-op threads, the project's parallel loops on {}", threads,
               upp::model::ParallelLoopThreads());
  auto server = upp::server::Server::Create(config);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  std::thread waiter([&] {
    char sig = 0;
    for (;;) {
      sig = 0;
      while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
      }
      if (sig != SIGHUP) break;
      spdlog::info("SIGHUP: reading the configuration again");
      // The versions load on the registry's management thread: a SIGTERM
      // that follows is not held up by them.
      (*server)->Reload(upp::server::AssembleConfig(f, DefaultModelCandidates())).IgnoreError();
    }
    spdlog::info("signal {}: draining", static_cast<int>(sig));
    (*server)->Drain(absl::Seconds(config.drain_grace_seconds()));
  });
  (*server)->Wait();
  waiter.join();
  server->reset();
  spdlog::info("stopped");
  return 0;
}
