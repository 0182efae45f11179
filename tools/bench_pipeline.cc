// upp-bench-pipeline: the inference pipeline on a synthetic int16 CT (default
// 512 x 512 x 300 at 0.8 x 0.8 x 2.5 mm) with a randomly initialised UNETR++
// (default: the full synapse preset), on CPU. Reports the time of every stage
// (NIfTI decoding, preprocessing, window extraction, network, stitching,
// back-resampling, argmax and paste) and the peak resident memory, as JSON.
// --body-fraction sets the share of the field of view the body spans (a
// realistic field of view leaves air around it) and --crop the crop (the
// plan's default for CT: body); the windows run and those the crop saved are
// reported.
//
// Speed modes (docs/server.md): --weights runs a trained model instead of
// random weights, --phantom SEED a synthetic abdomen (tools/phantom.h) on the
// grid instead of the ellipse, --mode fast its fast step, --mode fastest
// the --fastest model instead, and --labels the subset as the server runs
// it (--fastest locates, then only the box). --fastest-spacing makes
// `fastest` --preset's network on a coarser grid: a published-size fastest
// model, for timing beside the published code. One mode per run, so that the
// peak RSS is the mode's.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "imageio/labels.h"
#include "imageio/nifti.h"
#include "inference/job.h"
#include "inference/label_subset.h"
#include "inference/model_status.h"
#include "model/config.h"
#include "model/window_runner.h"
#include "tools/cli_flags.h"
#include "tools/phantom.h"

namespace pp = upp::preprocessing;
namespace io = upp::imageio;
namespace inference = upp::inference;

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double PeakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // KiB on Linux
}

template <typename T>
void Put(std::string& b, size_t offset, T v) {
  std::memcpy(&b[offset], &v, sizeof(T));
}

// A NIfTI-1 int16 file in memory (pixdim-only geometry): a body ellipse of
// soft tissue spanning `body_x` x `body_y` of the field of view, with organs,
// bone and noise in air. Written here because the project writes only label
// maps; the layout is NIfTI-1's fixed header.
std::string SyntheticCt(int64_t nx, int64_t ny, int64_t nz, double sx, double sy, double sz, double body_x,
                        double body_y) {
  std::string b(352 + nx * ny * nz * 2, '\0');
  Put<int32_t>(b, 0, 348);
  const int16_t dim[8] = {3, static_cast<int16_t>(nx), static_cast<int16_t>(ny), static_cast<int16_t>(nz), 1, 1, 1, 1};
  std::memcpy(&b[40], dim, sizeof(dim));
  Put<int16_t>(b, 70, 4);   // datatype int16
  Put<int16_t>(b, 72, 16);  // bitpix
  const float pixdim[8] = {1, static_cast<float>(sx), static_cast<float>(sy), static_cast<float>(sz), 1, 1, 1, 1};
  std::memcpy(&b[76], pixdim, sizeof(pixdim));
  Put<float>(b, 108, 352.0f);  // vox_offset
  std::memcpy(&b[344], "n+1\0", 4);
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 20.0f);
  int16_t* v = reinterpret_cast<int16_t*>(&b[352]);
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x) {
        const double u = (x - nx / 2.0) / (nx * body_x / 2), w = (y - ny / 2.0) / (ny * body_y / 2);
        const double r = u * u + w * w;
        float hu = -1000.0f;
        if (r < 1.0) {
          hu = r > 0.85 ? -90.0f : 40.0f;                                          // fat rim, tissue
          if ((u - 0.35) * (u - 0.35) + (w + 0.1) * (w + 0.1) < 0.12) hu = 60.0f;  // liver
          if (u * u + (w - 0.55) * (w - 0.55) < 0.02) hu = 700.0f;                 // spine
        }
        *v++ = static_cast<int16_t>(std::lround(hu + noise(rng)));
      }
  return b;
}

// The same file holding a phantom abdomen (tools/phantom.h) on the grid.
std::string PhantomCt(int64_t nx, int64_t ny, int64_t nz, double sx, double sy, double sz, uint64_t seed) {
  const auto grid = upp::tools::GridFor({sx, sy, sz}, {nx * sx, ny * sy, nz * sz});
  const auto phantom = upp::tools::Rasterize(upp::tools::RandomAnatomy(seed), grid, seed);
  const auto hu = upp::tools::ToInt16(phantom.hu);
  std::string b = SyntheticCt(1, 1, 1, sx, sy, sz, 0, 0);  // the header, then this grid's size
  const int16_t dim[8] = {3,
                          static_cast<int16_t>(grid.size[0]),
                          static_cast<int16_t>(grid.size[1]),
                          static_cast<int16_t>(grid.size[2]),
                          1,
                          1,
                          1,
                          1};
  std::memcpy(&b[40], dim, sizeof(dim));
  b.resize(352);
  b.append(reinterpret_cast<const char*>(hu.data()), hu.size() * sizeof(int16_t));
  return b;
}

// The job's items through `runner` in batches; the network's seconds.
absl::StatusOr<double> RunItems(inference::SegmentationJob& j, upp::model::WindowRunner& runner, int64_t batch) {
  std::vector<float> in(batch * j.input_floats()), out(batch * j.output_floats());
  double network = 0;
  for (int64_t first = 0; first < j.num_items(); first += batch) {
    const int64_t n = std::min(batch, j.num_items() - first);
    for (int64_t i = 0; i < n; ++i) (void)j.GetInput(first + i, in.data() + i * j.input_floats());
    const auto t = Clock::now();
    auto s = runner.Run(in.data(), n, out.data());
    network += Since(t);
    if (!s.ok()) return inference::FromModelStatus(s);
    for (int64_t i = 0; i < n; ++i) (void)j.AddOutput(first + i, out.data() + i * j.output_floats());
    std::fprintf(stderr, "\r%lld / %lld windows", static_cast<long long>(first + n),
                 static_cast<long long>(j.num_items()));
  }
  std::fprintf(stderr, "\n");
  return network;
}

constexpr char kTool[] = "upp-bench-pipeline";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the inference pipeline on a synthetic CT"};
  std::vector<int64_t> size{512, 512, 300};
  std::vector<double> spacing{0.8, 0.8, 2.5};
  std::vector<double> body{0.84, 0.64};
  std::string preset = "synapse", accumulator = "auto", crop;
  upp::tools::RunFlags run;
  app.add_option("--size", size, "x y z")->expected(3);
  app.add_option("--spacing", spacing, "x y z mm")->expected(3);
  app.add_option("--preset", preset, "UNETR++ preset (random weights)");
  app.add_option("--body-fraction", body, "share of the field of view the body spans, x y (e.g. 0.6 0.45)")
      ->expected(2);
  app.add_option("--crop", crop, "body | nonzero | none (default: the plan's, body for CT)");
  run.Register(app);
  app.add_option("--accumulator", accumulator, "auto | fp32 | fp16");
  std::string weights, fastest, mode = "full", labels;
  double fast_step = 0.75;
  uint64_t phantom = 0;
  app.add_option("--weights", weights, "a trained model instead of --preset's random weights");
  app.add_option("--fastest", fastest, "the fastest model (same labels): --mode fastest, and --labels' locator");
  app.add_option("--mode", mode, "full | fast | fastest");
  app.add_option("--fast-step", fast_step, "--mode fast's window step (no mirroring)");
  app.add_option("--labels", labels, "only these labels (comma-separated names), located by --fastest");
  std::vector<double> fastest_spacing;
  app.add_option("--fastest-spacing", fastest_spacing,
                 "--mode fastest without --fastest: --preset's network on this grid, x y z mm (e.g. 3 3 3)")
      ->expected(3);
  app.add_option("--phantom", phantom, "a synthetic abdomen of this seed (tools/phantom.h) instead of the ellipse");
  CLI11_PARSE(app, argc, argv);
  run.Apply();

  if (((mode == "fastest" && fastest_spacing.empty()) || (!labels.empty() && mode != "fastest")) && fastest.empty())
    return upp::tools::Fail(kTool, "--mode fastest needs --fastest or --fastest-spacing, --labels --fastest");
  if (mode != "full" && mode != "fast" && mode != "fastest")
    return upp::tools::Fail(kTool, "--mode takes full, fast or fastest, got " + mode);
  // The model that runs, its plan; and the locator of a subset.
  const auto load =
      [&](const std::string& path) -> absl::StatusOr<std::pair<std::unique_ptr<upp::model::WindowRunner>, pp::Plan>> {
    auto r = upp::model::WindowRunner::FromWeightsFile(path, {"cpu", "fp32"});
    if (!r.ok()) return inference::FromModelStatus(r.status());
    auto p = pp::Plan::FromMetadata((*r)->metadata());
    if (!p.ok()) return p.status();
    return std::make_pair(std::move(*r), *std::move(p));
  };
  std::unique_ptr<upp::model::WindowRunner> runner, locator;
  pp::Plan plan, locator_plan;
  if (weights.empty() && (mode != "fastest" || !fastest_spacing.empty())) {
    auto config = upp::model::Preset(preset);
    if (!config.ok()) return upp::tools::FailWith(kTool, config.status());
    auto r = upp::model::WindowRunner::FromConfig(*config);
    if (!r.ok()) return upp::tools::FailWith(kTool, r.status());
    runner = std::move(*r);
    plan = pp::DefaultCtPlan(config->num_classes, config->patch);
    // A published-size `fastest` model: the same network on a coarser grid
    // (as TotalSegmentator's 3 mm --fast), random weights like the rest.
    if (mode == "fastest") plan.target_spacing = {fastest_spacing[2], fastest_spacing[1], fastest_spacing[0]};
  } else {
    auto m = load(mode == "fastest" ? fastest : weights);
    if (!m.ok()) return upp::tools::FailWith(kTool, m.status());
    std::tie(runner, plan) = *std::move(m);
  }
  // The labels' values in the locator's table (where the box is found) and in
  // the model's (what is kept): the same in a server, which refuses a fastest
  // model with other labels; not so for --preset's random network, which
  // names BTCV's labels.
  std::vector<int> values, located_values;
  if (!labels.empty()) {
    // As the server: `fastest` keeps the labels of its one pass; the other
    // modes locate them first.
    if (mode != "fastest") {
      auto m = load(fastest);
      if (!m.ok()) return upp::tools::FailWith(kTool, m.status());
      std::tie(locator, locator_plan) = *std::move(m);
    } else {
      locator_plan = plan;
    }
    for (const std::string& name : std::vector<std::string>(absl::StrSplit(labels, ','))) {
      const auto value = upp::imageio::FindLabelValue(plan.labels, name);
      const auto located = upp::imageio::FindLabelValue(locator_plan.labels, name);
      if (!value || !located) return upp::tools::Fail(kTool, "--labels: no label " + std::string(name));
      values.push_back(*value);
      located_values.push_back(*located);
    }
  }
  inference::JobOptions options;
  if (mode == "fast" || mode == "fastest") inference::ApplyFastMode(fast_step, &options);  // as the server
  options.accumulator = accumulator == "fp32"   ? inference::AccumulatorPrecision::kFloat32
                        : accumulator == "fp16" ? inference::AccumulatorPrecision::kFloat16
                                                : inference::AccumulatorPrecision::kAuto;
  if (!crop.empty()) {
    options.crop = pp::CropModeFromName(crop);
    if (!options.crop) return upp::tools::Fail(kTool, "--crop takes body, nonzero or none, got " + crop);
  }

  std::string file = phantom
                         ? PhantomCt(size[0], size[1], size[2], spacing[0], spacing[1], spacing[2], phantom)
                         : SyntheticCt(size[0], size[1], size[2], spacing[0], spacing[1], spacing[2], body[0], body[1]);
  const double rss_file = PeakRssMiB();
  const auto t_all = Clock::now();
  auto t = Clock::now();
  auto image = io::ReadNifti(file);
  if (!image.ok()) return upp::tools::FailWith(kTool, image.status());
  const double decode = Since(t);
  std::string().swap(file);  // a server frees the received bytes after decoding too
  // A subset: the locator over the whole volume (a copy: the server keeps
  // the input for the second pass too), then only the box.
  double locate = 0;
  int64_t locator_windows = 0;
  if (locator) {
    t = Clock::now();
    auto located_job = inference::SegmentationJob::Create(image->volume, locator_plan, inference::LocatingOptions());
    if (!located_job.ok()) return upp::tools::FailWith(kTool, located_job.status());
    locator_windows = (*located_job)->num_items();
    if (auto s = RunItems(**located_job, *locator, run.batch); !s.ok()) return upp::tools::FailWith(kTool, s.status());
    auto located = (*located_job)->Finish();
    if (!located.ok()) return upp::tools::FailWith(kTool, located.status());
    if (!inference::AimAtLabels(*located, located_values, inference::kDefaultSubsetMarginMm, mode == "fast", &options))
      return upp::tools::Fail(kTool, "--labels: the locator found none of them");
    locate = Since(t);
  }
  t = Clock::now();
  auto job = inference::SegmentationJob::Create(std::move(image->volume), plan, options);
  if (!job.ok()) return upp::tools::FailWith(kTool, job.status());
  const double create = Since(t);
  inference::SegmentationJob& j = **job;
  const int64_t batch = run.batch;
  auto network_seconds = RunItems(j, *runner, batch);
  if (!network_seconds.ok()) return upp::tools::FailWith(kTool, network_seconds.status());
  const double network = *network_seconds;
  t = Clock::now();
  auto label_map = j.Finish();
  if (!label_map.ok()) return upp::tools::FailWith(kTool, label_map.status());
  if (!values.empty()) inference::KeepLabels(values, &*label_map);
  const double finish = Since(t);
  const double total = Since(t_all);
  const inference::StageTimes st = j.timings();
  const double outside_network = total - network - locate;  // the locating pass apart
  const inference::CropReport& crop_report = j.crop_report();
  const auto& box = crop_report.box_xyz;
  std::printf("{\"mode\": \"%s\", \"labels\": \"%s\", \"locator_windows\": %lld, \"locate_seconds\": %.3f,\n ",
              mode.c_str(), labels.c_str(), static_cast<long long>(locator_windows), locate);
  std::printf(
      "\"size\": [%lld, %lld, %lld], \"grid\": [%lld, %lld, %lld], \"windows\": %lld, "
      "\"classes\": %lld, \"threads\": %d, \"batch\": %lld,\n"
      " \"body_fraction\": [%.2f, %.2f], \"crop\": \"%s\", \"crop_box_xyz\": [[%lld, %lld], [%lld, %lld], "
      "[%lld, %lld]], \"windows_uncropped\": %lld, \"windows_skipped\": %lld,\n"
      " \"seconds\": {\"decode\": %.3f, \"crop\": %.3f, \"resample\": %.3f, \"normalize\": %.3f, "
      "\"preprocess_total\": %.3f, \"extract\": %.3f, \"network\": %.3f, \"stitch\": %.3f, "
      "\"resample_back\": %.3f, \"argmax_paste\": %.3f, \"finish_total\": %.3f, \"total\": %.3f},\n"
      " \"outside_network_fraction\": %.4f, \"peak_rss_mib\": %.0f, \"rss_of_input_file_mib\": %.0f}\n",
      static_cast<long long>(size[0]), static_cast<long long>(size[1]), static_cast<long long>(size[2]),
      static_cast<long long>(j.network_grid()[0]), static_cast<long long>(j.network_grid()[1]),
      static_cast<long long>(j.network_grid()[2]), static_cast<long long>(j.num_windows()),
      static_cast<long long>(j.num_classes()), run.threads, static_cast<long long>(batch), body[0], body[1],
      pp::CropModeName(crop_report.mode), static_cast<long long>(box[0][0]), static_cast<long long>(box[0][1]),
      static_cast<long long>(box[1][0]), static_cast<long long>(box[1][1]), static_cast<long long>(box[2][0]),
      static_cast<long long>(box[2][1]), static_cast<long long>(crop_report.windows_uncropped),
      static_cast<long long>(crop_report.windows_skipped), decode, st.crop, st.resample, st.normalize, create,
      st.extract, network, st.stitch, st.resample_back, st.argmax_paste, finish, total, outside_network / total,
      PeakRssMiB(), rss_file);
  return 0;
}
