// upp-bench-load: the service under load, end to end over gRPC.
//
// Starts the real server in this process (loopback TCP, the real client
// library), once with window batching on and once with it off, and sends
// synthetic CT phantoms of three sizes as gzipped int16 NIfTI:
//   1. one client, requests one after another: request latency against the
//      network's own compute for that request (the server's summed network
//      time per batch, upp_batch_inference_duration_seconds), giving the
//      service overhead = everything but the network, as a share of latency;
//   2. N clients at once, each cycling through the sizes from a different
//      start: throughput in windows/s, p50/p95 latency, mean batch size;
//      with --speed-modes, the requests in a mix of speed modes
//      (RequestHeader.mode) sent concurrently, and the figures per mode.
//   3. with --tracing-rounds R, the load phase (batching on) 2R times on one
//      server, tracing off and on alternately (OTLP to --tracing-endpoint,
//      by default unreachable): windows/s each way and the overhead.
// Prints JSON on stdout and a table on stderr. Numbers go to BENCHMARKS.md.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/client.h"
#include "imageio/nifti.h"
#include "model/cpu_threads.h"
#include "proto/api.h"
#include "server/command_line.h"
#include "server/config.h"
#include "server/server.h"
#include "tools/phantom.h"
#include "tracing/server_tracing.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Input {
  std::string name;
  std::string nifti;  // .nii.gz bytes
  std::array<int64_t, 3> size;
};

// A phantom CT of `size` voxels at `spacing` mm, centred on the patient.
Input MakeInput(const std::string& name, std::array<int64_t, 3> size, std::array<double, 3> spacing, uint64_t seed) {
  const auto geometry =
      upp::tools::GridFor(spacing, {size[0] * spacing[0], size[1] * spacing[1], size[2] * spacing[2]});
  const auto phantom = upp::tools::Rasterize(upp::tools::RandomAnatomy(seed), geometry, seed);
  upp::imageio::NiftiHeaderInfo header;
  header.qform_code = header.sform_code = 1;
  auto bytes = upp::imageio::WriteNiftiInt16(geometry, upp::tools::ToInt16(phantom.hu), header);
  if (!bytes.ok()) {
    std::fprintf(stderr, "%s\n", bytes.status().ToString().c_str());
    std::exit(1);
  }
  return {name, std::move(*bytes), geometry.size};
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - lo) * (v[hi] - v[lo]);
}

// The load phase's speed modes (--speed-modes): `full,fast,fastest` gives
// each an equal share, `full:2,fast:1` twice as many full as fast requests.
// The shares are interleaved into one cycle, and request r of client k takes
// the cycle's (r * clients + k)-th mode, so that concurrent clients run
// different modes at any moment. Empty: every request names no mode (the
// model's default).
struct ModeMix {
  std::vector<unetrpp::v1::SpeedMode> cycle;

  bool Has(unetrpp::v1::SpeedMode mode) const { return std::find(cycle.begin(), cycle.end(), mode) != cycle.end(); }
  unetrpp::v1::SpeedMode For(int client, int request, int clients) const {
    if (cycle.empty()) return unetrpp::v1::SPEED_MODE_UNSPECIFIED;
    return cycle[(static_cast<size_t>(request) * clients + client) % cycle.size()];
  }
};

// Nullopt (with a message on stderr) for a name that is no mode or a share
// that is not a positive integer.
std::optional<ModeMix> ParseModeMix(const std::string& text) {
  ModeMix mix;
  if (text.empty()) return mix;
  std::vector<std::pair<unetrpp::v1::SpeedMode, int>> shares;
  for (const std::string& item : std::vector<std::string>(absl::StrSplit(text, ','))) {
    const std::vector<std::string> parts = absl::StrSplit(item, ':');
    const auto mode = upp::proto::SpeedModeFromName(parts[0]);
    int share = 1;
    if (parts.size() > 2 || !mode || (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &share)) || share < 1 ||
        share > 100) {
      std::fprintf(stderr, "--speed-modes: '%s' is not MODE or MODE:SHARE (full, fast, fastest; share 1-100)\n",
                   item.c_str());
      return std::nullopt;
    }
    shares.emplace_back(*mode, share);
  }
  // Interleaved (full, fast, fastest, full, ...) rather than in runs, so
  // that each stretch of the cycle holds every mode.
  for (bool added = true; added;) {
    added = false;
    for (auto& [mode, left] : shares)
      if (left > 0) mix.cycle.push_back(mode), --left, added = true;
  }
  return mix;
}

struct Options {
  std::string weights = "model/weights/phantom_ct_v1.safetensors";
  // The coarse model that `fastest` runs (speed.fastest_model), configured
  // when the mix has `fastest`; empty: the default one beside `weights`.
  std::string fastest_weights;
  ModeMix mix;
  int clients = 4, requests_per_client = 3, single_repeats = 3;
  int cpu_threads = 2, intra_op_threads = 0, batch = 4, delay_us = 2000;
  bool stitch_on_worker = false;   // batching.stitch_on_worker
  std::string device = "cpu";      // the model's device
  std::string job_device = "cpu";  // where its jobs stitch and resample (models.job_device)
  // --tracing-rounds: the load phase alternately with tracing off and on.
  int tracing_rounds = 0;
  std::string tracing_endpoint = "127.0.0.1:1";  // nothing listens: spans are dropped after the export fails
};

// What one client's request gave: the mode the server says it ran
// (Summary.mode), its windows and latency.
struct Done {
  unetrpp::v1::SpeedMode mode;
  uint64_t windows;
  double latency;
};

// The served name of the coarse model that `fastest` runs.
constexpr char kCoarse[] = "m-coarse";

std::unique_ptr<upp::server::Server> StartServer(const Options& o, bool batching) {
  const std::string text =
      "listen_address: '127.0.0.1:0'\nmetrics_address: 'off'\ncpu_threads: " + std::to_string(o.cpu_threads) +
      "\nintra_op_threads: " + std::to_string(o.intra_op_threads) +
      "\nlogging { level: 'warn' }\nbatching { max_batch_size: " + std::to_string(batching ? o.batch : 1) +
      " max_queue_delay_us: " + std::to_string(batching ? o.delay_us : 0) +
      (o.stitch_on_worker ? " stitch_on_worker: true" : "") + " }\nmodels { name: 'm' weights: '" + o.weights +
      "' devices: '" + o.device + "' job_device: '" + o.job_device + "'" +
      (o.mix.Has(unetrpp::v1::SPEED_MODE_FASTEST) ? " speed { fastest_model: '" + std::string(kCoarse) + "' }" : "") +
      " }\n" +
      (o.mix.Has(unetrpp::v1::SPEED_MODE_FASTEST)
           ? "models { name: '" + std::string(kCoarse) + "' weights: '" + o.fastest_weights + "' devices: '" +
                 o.device + "' job_device: '" + o.job_device + "' }\n"
           : "");
  auto config = upp::server::ParseConfig(text);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    std::exit(1);
  }
  auto server = upp::server::Server::Create(*config);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*server);
}

upp::client::SegmentResult MustSegment(upp::client::Client& c, const Input& in,
                                       unetrpp::v1::SpeedMode mode = unetrpp::v1::SPEED_MODE_UNSPECIFIED) {
  upp::client::SegmentOptions options;
  options.model = "m";
  options.mode = mode;
  auto result = c.Segment({in.nifti}, options);
  if (!result.ok()) {
    std::fprintf(stderr, "request failed: %s\n", result.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*result);
}

// The load phase's clients: o.clients at once, each sending
// o.requests_per_client requests over the sizes from a different start.
std::vector<std::vector<Done>> RunClients(int port, const Options& o, const std::vector<Input>& inputs) {
  std::vector<std::vector<Done>> done(o.clients);
  std::vector<std::thread> threads;
  for (int k = 0; k < o.clients; ++k)
    threads.emplace_back([&, k] {
      auto client = upp::client::Client::Connect("127.0.0.1:" + std::to_string(port));
      for (int r = 0; r < o.requests_per_client; ++r) {
        const auto& in = inputs[(k + r) % inputs.size()];
        const auto t = Clock::now();
        const auto result = MustSegment(*client, in, o.mix.For(k, r, o.clients));
        done[k].push_back({result.summary.mode(), result.summary.windows(), Since(t)});
      }
    });
  for (auto& t : threads) t.join();
  return done;
}

// The load phase (batching on) 2 x o.tracing_rounds times on one server,
// tracing off and on alternately (the process's tracer installed and
// removed between rounds; every request a new sampled trace, exported to
// o.tracing_endpoint): windows/s each way, and the overhead of tracing.
nlohmann::json RunTracingRounds(const Options& o, const std::vector<Input>& inputs) {
  upp::tracing::TracingOptions options;
  options.endpoint = o.tracing_endpoint;
  options.schedule_delay = absl::Milliseconds(500);
  options.export_timeout = absl::Seconds(1);
  auto tracer = upp::tracing::Tracer::Create(options);
  if (!tracer.ok()) {
    std::fprintf(stderr, "%s\n", tracer.status().ToString().c_str());
    std::exit(1);
  }
  const std::shared_ptr<upp::tracing::Tracer> shared = std::move(*tracer);
  auto server = StartServer(o, true);
  auto c = upp::client::Client::Connect("127.0.0.1:" + std::to_string(server->port()));
  MustSegment(*c, inputs.front());  // warm the connection and the allocator
  nlohmann::json rounds = nlohmann::json::array();
  std::map<bool, std::vector<double>> rates;
  for (int round = 0; round < 2 * o.tracing_rounds; ++round) {
    const bool on = round % 2 == 1;
    upp::tracing::InstallTracer(on ? shared : nullptr);
    const auto start = Clock::now();
    uint64_t windows = 0;
    for (const auto& client : RunClients(server->port(), o, inputs))
      for (const Done& d : client) windows += d.windows;
    const double rate = windows / Since(start);
    rates[on].push_back(rate);
    rounds.push_back({{"tracing", on}, {"windows", windows}, {"windows_per_s", rate}});
    std::fprintf(stderr, "tracing %-3s round %d: %.2f windows/s\n", on ? "on" : "off", round / 2 + 1, rate);
  }
  upp::tracing::InstallTracer(nullptr);
  server->Drain(absl::Seconds(5));
  server->Wait();
  const auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / v.size();
  };
  const double off = mean(rates[false]), on = mean(rates[true]);
  std::fprintf(stderr, "tracing: off %.2f, on %.2f windows/s (mean of %d rounds each): overhead %.1f %%\n", off, on,
               o.tracing_rounds, 100 * (1 - on / off));
  return {{"endpoint", o.tracing_endpoint},
          {"rounds", rounds},
          {"windows_per_s_off", off},
          {"windows_per_s_on", on},
          {"overhead", 1 - on / off}};
}

nlohmann::json RunMode(const Options& o, bool batching, const std::vector<Input>& inputs) {
  auto server = StartServer(o, batching);
  auto c = upp::client::Client::Connect("127.0.0.1:" + std::to_string(server->port()));
  MustSegment(*c, inputs.front());  // warm the connection and the allocator
  nlohmann::json out;
  out["batching"] = batching;
  out["max_batch_size"] = batching ? o.batch : 1;
  out["stitch"] = o.stitch_on_worker ? "worker" : "cpu pool";

  // 1. One client, sequential requests.
  nlohmann::json single = nlohmann::json::array();
  std::vector<double> all_latency, all_network;
  for (const auto& in : inputs) {
    std::vector<double> latency, network, overhead;
    uint64_t windows = 0;
    nlohmann::json stages;
    for (int r = 0; r < o.single_repeats; ++r) {
      const auto before = server->Batches("m");
      const auto t = Clock::now();
      const auto result = MustSegment(*c, in);
      latency.push_back(Since(t));
      const auto after = server->Batches("m");
      network.push_back(after.network_seconds - before.network_seconds);
      overhead.push_back(1.0 - network.back() / latency.back());
      windows = result.summary.windows();
      for (const auto& timing : result.summary.timings())
        stages[unetrpp::v1::Stage_Name(timing.stage())].push_back(timing.seconds());
    }
    for (auto& [stage, seconds] : stages.items()) seconds = Percentile(seconds.get<std::vector<double>>(), 0.5);
    all_latency.insert(all_latency.end(), latency.begin(), latency.end());
    all_network.insert(all_network.end(), network.begin(), network.end());
    single.push_back({{"input", in.name},
                      {"size", in.size},
                      {"nifti_bytes", in.nifti.size()},
                      {"windows", windows},
                      {"latency_s_median", Percentile(latency, 0.5)},
                      {"network_s_median", Percentile(network, 0.5)},
                      {"overhead_median", Percentile(overhead, 0.5)},
                      {"stage_s_median", stages}});
  }
  double latency_sum = 0, network_sum = 0;
  for (double v : all_latency) latency_sum += v;
  for (double v : all_network) network_sum += v;
  out["single_client"] = single;
  out["single_client_overhead_all_requests"] = 1.0 - network_sum / latency_sum;

  // 2. N clients at once, mixed sizes.
  if (o.clients <= 0) {
    server->Drain(absl::Seconds(5));
    server->Wait();
    return out;
  }
  const bool fastest = o.mix.Has(unetrpp::v1::SPEED_MODE_FASTEST);
  const auto before = server->Batches("m");
  const auto coarse_before = fastest ? server->Batches(kCoarse) : upp::server::Metrics::BatchTotals{};
  const auto start = Clock::now();
  const std::vector<std::vector<Done>> done = RunClients(server->port(), o, inputs);
  const double wall = Since(start);
  const auto after = server->Batches("m");
  std::vector<double> all;
  uint64_t total_windows = 0;
  std::map<unetrpp::v1::SpeedMode, std::pair<std::vector<double>, uint64_t>> per_mode;  // latencies, windows
  for (int k = 0; k < o.clients; ++k)
    for (const Done& d : done[k]) {
      all.push_back(d.latency);
      total_windows += d.windows;
      per_mode[d.mode].first.push_back(d.latency);
      per_mode[d.mode].second += d.windows;
    }
  out["load"] = {
      {"clients", o.clients},
      {"requests", all.size()},
      {"windows", total_windows},
      {"wall_s", wall},
      {"windows_per_s", total_windows / wall},
      {"latency_s_p50", Percentile(all, 0.5)},
      {"latency_s_p95", Percentile(all, 0.95)},
      {"mean_batch_windows", (after.windows - before.windows) / std::max(1.0, after.batches - before.batches)},
      {"network_s", after.network_seconds - before.network_seconds}};
  if (!o.mix.cycle.empty()) {
    // Windows are the running model's: a `fastest` window is the coarse
    // model's (1/8 the voxels at 8 x 6 x 6 mm), so windows/s compare within
    // a mode, not across modes. Per mode over the whole phase's wall time:
    // each mode's share of the throughput while all of them ran.
    nlohmann::json modes;
    for (const auto& [mode, figures] : per_mode)
      modes[upp::proto::SpeedModeName(mode)] = {{"requests", figures.first.size()},
                                                {"windows", figures.second},
                                                {"windows_per_s", figures.second / wall},
                                                {"latency_s_p50", Percentile(figures.first, 0.5)},
                                                {"latency_s_p95", Percentile(figures.first, 0.95)}};
    out["load"]["speed_modes"] = modes;
    if (fastest) {
      const auto coarse_after = server->Batches(kCoarse);
      out["load"]["fastest_model_mean_batch_windows"] =
          (coarse_after.windows - coarse_before.windows) / std::max(1.0, coarse_after.batches - coarse_before.batches);
    }
  }
  server->Drain(absl::Seconds(5));
  server->Wait();
  return out;
}

// One line per mode on stderr (stdout carries the JSON).
void PrintMode(const nlohmann::json& r, bool batching, bool on_worker, const std::string& job_device) {
  std::fprintf(stderr, "batching %-3s stitch on %-6s jobs on %-6s | one client:", batching ? "on" : "off",
               on_worker ? "worker" : "pool", job_device.c_str());
  for (const auto& s : r["single_client"])
    std::fprintf(stderr, " %s %llu windows %.2f s (network %.2f s, overhead %.1f %%);",
                 s["input"].get<std::string>().substr(0, s["input"].get<std::string>().find(' ')).c_str(),
                 static_cast<unsigned long long>(s["windows"].get<uint64_t>()), s["latency_s_median"].get<double>(),
                 s["network_s_median"].get<double>(), 100 * s["overhead_median"].get<double>());
  std::fprintf(stderr, "\n");
  if (!r.contains("load")) return;
  const auto& l = r["load"];
  std::fprintf(stderr, "              | %d clients: %.2f windows/s, p50 %.2f s, p95 %.2f s, mean batch %.2f\n",
               l["clients"].get<int>(), l["windows_per_s"].get<double>(), l["latency_s_p50"].get<double>(),
               l["latency_s_p95"].get<double>(), l["mean_batch_windows"].get<double>());
  if (!l.contains("speed_modes")) return;
  for (const auto& [mode, m] : l["speed_modes"].items())
    std::fprintf(stderr, "              |   %-7s %3zu requests: %.2f windows/s, p50 %.2f s, p95 %.2f s\n", mode.c_str(),
                 m["requests"].get<size_t>(), m["windows_per_s"].get<double>(), m["latency_s_p50"].get<double>(),
                 m["latency_s_p95"].get<double>());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"unetrpp-serve under load: overhead at one client, throughput and latency at N clients"};
  Options o;
  std::string modes = "on,off", sizes = "small,medium,large", stitch = "pool";
  app.add_option("--weights", o.weights, "model (safetensors with unetrpp_config / unetrpp_plan metadata)");
  app.add_option("--clients", o.clients, "concurrent clients in the load phase");
  app.add_option("--requests", o.requests_per_client, "requests per client in the load phase");
  app.add_option("--repeats", o.single_repeats, "sequential requests per input size at one client");
  app.add_option("--cpu-threads", o.cpu_threads, "server CPU pool (decode, preprocess, postprocess, encode)");
  app.add_option("--intra-op-threads", o.intra_op_threads, "LibTorch threads of the model instance (0: all)");
  app.add_option("--batch", o.batch, "max_batch_size with batching on");
  app.add_option("--delay-us", o.delay_us, "max_queue_delay_us with batching on");
  app.add_option("--modes", modes, "on,off | on | off");
  app.add_option("--device", o.device, "the model's device: cpu, cuda:N");
  app.add_option("--stitch", stitch, "where windows are stitched: pool (the CPU pool), worker, or pool,worker (both)");
  app.add_option("--inputs", sizes, "input sizes to use: any of small,medium,large");
  std::string job_devices = "cpu";
  app.add_option("--job-devices", job_devices, "where jobs live, each measured: cpu, cuda:N or cpu,cuda:N");
  std::string speed_modes;
  app.add_option("--speed-modes", speed_modes,
                 "the load phase's requests in a mix of speed modes, sent concurrently: full,fast,fastest (equal "
                 "shares) or full:2,fast:1,fastest:1; figures per mode. Default: no mode (the model's default)");
  app.add_option("--tracing-rounds", o.tracing_rounds,
                 "then the load phase (batching on) this many times each with tracing off and on, alternated: "
                 "windows/s each way and the overhead (docs/server.md Tracing)");
  app.add_option("--tracing-endpoint", o.tracing_endpoint,
                 "the OTLP/gRPC collector of the traced rounds (default 127.0.0.1:1: unreachable, spans dropped)");
  app.add_option("--fastest-weights", o.fastest_weights,
                 "the coarse model `fastest` runs (default: phantom_ct_coarse_v1.safetensors beside --weights)");
  CLI11_PARSE(app, argc, argv);
  const auto mix = ParseModeMix(speed_modes);
  if (!mix) return 1;
  o.mix = *mix;
  if (o.fastest_weights.empty())
    o.fastest_weights =
        std::filesystem::path(o.weights).replace_filename(upp::server::kDefaultCoarseModelFile).string();
  upp::model::ConfigureCpuThreads(o.intra_op_threads);
  // stdout carries the JSON: the server's warnings (spdlog's default logger
  // writes to stdout) go to stderr with the table.
  spdlog::set_default_logger(spdlog::stderr_color_mt("upp-bench-load"));
  spdlog::set_level(spdlog::level::warn);

  // Three sizes: a small low-resolution scan, a typical abdomen, a fine one.
  std::vector<Input> inputs;
  if (sizes.find("small") != std::string::npos)
    inputs.push_back(MakeInput("small 192x192x30 @1.25x1.25x5", {192, 192, 30}, {1.25, 1.25, 5.0}, 101));
  if (sizes.find("medium") != std::string::npos)
    inputs.push_back(MakeInput("medium 384x384x80 @1x1x3", {384, 384, 80}, {1.0, 1.0, 3.0}, 102));
  if (sizes.find("large") != std::string::npos)
    inputs.push_back(MakeInput("large 512x512x120 @0.8x0.8x2.5", {512, 512, 120}, {0.8, 0.8, 2.5}, 103));
  if (inputs.empty()) return std::fprintf(stderr, "--inputs names none of small, medium, large\n"), 1;
  nlohmann::json out;
  out["weights"] = o.weights;
  out["hardware_threads"] = std::thread::hardware_concurrency();
  out["device"] = o.device;
  if (!o.mix.cycle.empty()) {
    out["speed_modes"] = speed_modes;
    if (o.mix.Has(unetrpp::v1::SPEED_MODE_FASTEST)) out["fastest_weights"] = o.fastest_weights;
  }
  for (const std::string& job_device : std::vector<std::string>(absl::StrSplit(job_devices, ','))) {
    o.job_device = job_device;
    for (const bool on_worker : {false, true}) {
      if (stitch.find(on_worker ? "worker" : "pool") == std::string::npos) continue;
      o.stitch_on_worker = on_worker;
      for (bool batching : {true, false}) {
        if (modes.find(batching ? "on" : "off") == std::string::npos) continue;
        const auto r = RunMode(o, batching, inputs);
        out[std::string(batching ? "batching_on" : "batching_off") + (on_worker ? "_stitch_on_worker" : "") +
            (job_device == "cpu" ? "" : "_jobs_on_" + job_device)] = r;
        PrintMode(r, batching, on_worker, job_device);
      }
    }
  }
  if (o.tracing_rounds > 0 && o.clients > 0) out["tracing"] = RunTracingRounds(o, inputs);
  std::printf("%s\n", out.dump(1).c_str());
  return 0;
}
