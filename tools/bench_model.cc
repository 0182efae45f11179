// upp-bench-model: times UNETR++ forward passes on random weights.
//
//   upp-bench-model [--preset synapse] [--threads 2] [--runs 5] [--warmup 1]
//                   [--batch 1] [--precision fp32|bf16] [--device cpu|cuda]
//                   [--profile trace.json]
//
// Prints the median wall time per window over --runs timed passes (after
// --warmup untimed ones), windows/s and effective GFLOP/s, counting the
// reference's 47.98 G multiply-adds per full synapse window (scaled by voxel
// count for other patches, which is only indicative), plus peak RSS. On the
// CPU it also measures the fp32 FMA peak of the threads used (fma_peak.h)
// and prints the fraction of it each window reaches.
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "model/network.h"
#include "tools/fma_peak.h"
#include "tools/model_cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Benchmark a UNETR++ forward pass"};
  upp::tools::ModelFlags flags;
  flags.preset = "synapse";
  flags.Register(app);
  int runs = 5, warmup = 1, batch = 1;
  std::string weights, profile;
  app.add_option("--runs", runs, "timed runs");
  app.add_option("--warmup", warmup, "untimed runs first");
  app.add_option("--batch", batch, "windows per forward pass");
  app.add_option("--weights", weights, "load these weights instead of random ones");
  app.add_option("--profile", profile,
                 "after timing, one more pass under LibTorch's profiler: a Chrome trace to this file "
                 "(tools/profile_model.py sums it per operator)");
  CLI11_PARSE(app, argc, argv);
  flags.ApplyThreads();

  auto config = flags.Resolve(weights);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  auto options = flags.Options();
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", options.status().ToString().c_str());
    return 1;
  }
  torch::manual_seed(0);
  auto net = upp::model::Network::Create(*config, *options);
  if (!net.ok()) {
    std::fprintf(stderr, "%s\n", net.status().ToString().c_str());
    return 1;
  }
  if (!weights.empty()) {
    if (auto s = (*net)->LoadWeights(weights); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  const auto& p = config->patch;
  auto x = torch::randn({batch, config->in_channels, p[0], p[1], p[2]}).to(options->device);
  const bool cuda = options->device.is_cuda();
  std::vector<double> ms;
  for (int i = 0; i < warmup + runs; ++i) {
    if (cuda) torch::cuda::synchronize();
    auto t0 = std::chrono::steady_clock::now();
    auto out = (*net)->Forward(x);
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      return 1;
    }
    if (cuda) torch::cuda::synchronize();
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(t / batch);
  }
  if (!profile.empty()) {
    torch::autograd::profiler::RecordProfile guard(profile);
    if (auto out = (*net)->Forward(x); !out.ok())
      return std::fprintf(stderr, "%s\n", out.status().ToString().c_str()), 1;
    if (cuda) torch::cuda::synchronize();
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double voxels = static_cast<double>(p[0] * p[1] * p[2]);
  const double gmacs = 47.98 * voxels / (64.0 * 128 * 128);
  const double gflops = 2 * gmacs / (median / 1000.0);
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf(
      "preset=%s patch=%ldx%ldx%ld batch=%d device=%s precision=%s threads=%d runs=%d\n"
      "median_ms_per_window=%.1f min_ms=%.1f max_ms=%.1f windows_per_s=%.3f "
      "effective_gflops=%.1f peak_rss_mib=%.0f\n",
      config->preset.c_str(), p[0], p[1], p[2], batch, flags.device.c_str(), flags.precision.c_str(),
      torch::get_num_threads(), runs, median, ms.front(), ms.back(), 1000.0 / median, gflops, ru.ru_maxrss / 1024.0);
  if (!cuda) {
    // After the timed runs: the loop must not warm the clock for them.
    const upp::tools::FmaPeak peak = upp::tools::MeasureFp32Peak(torch::get_num_threads());
    std::printf("fp32_peak_gflops=%.1f (%s FMA loop, %d threads) fraction_of_fp32_peak=%.2f\n", peak.gflops,
                peak.isa.c_str(), torch::get_num_threads(), peak.gflops > 0 ? gflops / peak.gflops : 0.0);
  }
  return 0;
}
