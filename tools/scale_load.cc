// upp-scale-load: clients against several replicas, as Kubernetes clients of
// a headless service are: one channel per client with gRPC's client-side
// round-robin over the replicas' addresses, retrying UNAVAILABLE (a replica
// draining or gone) per the client library's policy. Each client segments
// the same NIfTI volume again and again until the time is up; every request
// ends OK or is counted as lost with its status. Prints JSON on stdout.
// deploy/scale-test.sh drives it while it stops one replica.
//
//   upp-scale-load --target ipv4:127.0.0.2:50061,127.0.0.3:50061 --input ct.nii.gz
//                  [--clients 6] [--seconds 60] [--attempts 6] [--deadline 300]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/client.h"
#include "imageio/file_util.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Outcome {
  double started_s = 0, seconds = 0;
  int attempts = 0;
  std::string code;  // "OK" or the final status code
};

struct Options {
  std::string target, input, lb = "round_robin";
  int clients = 6, attempts = 6;
  double seconds = 60, deadline = 300;
};

// One client: its own channel (as separate client processes have), requests
// back to back until `end`.
void RunClient(const Options& o, const std::string& volume, Clock::time_point t0, Clock::time_point end, std::mutex& mu,
               std::vector<Outcome>& outcomes) {
  upp::client::ConnectOptions connect;
  connect.load_balancing = o.lb;
  auto client = upp::client::Client::Connect(o.target, connect);
  if (!client.ok()) return;
  upp::client::SegmentOptions options;
  options.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
  options.max_attempts = o.attempts;
  options.deadline = absl::Seconds(o.deadline);
  while (Clock::now() < end) {
    Outcome out;
    const auto start = Clock::now();
    out.started_s = std::chrono::duration<double>(start - t0).count();
    auto result = (*client)->Segment({volume}, options);
    out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    out.attempts = result.ok() ? result->attempts : o.attempts;
    out.code = result.ok() ? "OK" : absl::StatusCodeToString(result.status().code());
    std::lock_guard<std::mutex> lock(mu);
    outcomes.push_back(out);
  }
}

nlohmann::json Summarize(std::vector<Outcome> outcomes) {
  std::map<std::string, int> codes;
  int retried = 0;
  std::vector<double> latencies;
  for (const auto& o : outcomes) {
    ++codes[o.code];
    retried += o.attempts > 1;
    if (o.code == "OK") latencies.push_back(o.seconds);
  }
  std::sort(latencies.begin(), latencies.end());
  auto quantile = [&](double q) {
    return latencies.empty() ? 0.0 : latencies[static_cast<size_t>(q * (latencies.size() - 1))];
  };
  nlohmann::json j;
  j["requests"] = outcomes.size();
  j["ok"] = codes["OK"];
  j["lost"] = static_cast<int>(outcomes.size()) - codes["OK"];
  j["codes"] = codes;
  j["retried"] = retried;
  j["latency_p50_s"] = quantile(0.5);
  j["latency_p95_s"] = quantile(0.95);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"upp-scale-load: round-robin clients against unetrpp-serve replicas"};
  Options o;
  app.add_option("--target", o.target, "gRPC target: ipv4:a:port,b:port or dns:///name:port")->required();
  app.add_option("--input", o.input, "NIfTI volume to segment")->required();
  app.add_option("--lb", o.lb, "load-balancing policy")->capture_default_str();
  app.add_option("--clients", o.clients, "concurrent clients, one channel each")->capture_default_str();
  app.add_option("--seconds", o.seconds, "start requests for this long")->capture_default_str();
  app.add_option("--attempts", o.attempts, "tries per request on UNAVAILABLE")->capture_default_str();
  app.add_option("--deadline", o.deadline, "per request, all attempts")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto volume = upp::imageio::ReadWholeFile(o.input);
  if (!volume.ok()) return std::fprintf(stderr, "upp-scale-load: cannot read %s\n", o.input.c_str()), 1;
  std::mutex mu;
  std::vector<Outcome> outcomes;
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c)
    threads.emplace_back(RunClient, std::cref(o), std::cref(*volume), t0, end, std::ref(mu), std::ref(outcomes));
  for (auto& t : threads) t.join();
  std::printf("%s\n", Summarize(outcomes).dump(2).c_str());
  return 0;
}
