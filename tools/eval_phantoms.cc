// upp-eval-phantoms: Dice per label of a model on unseen phantoms, through
// the whole pipeline (native random grid -> plan grid -> windows -> back).
// Seeds start at --first-seed (training used seeds derived from its own
// seed; the default here, 900000, is far from them).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "inference/job.h"
#include "inference/model_runner.h"
#include "model/window_runner.h"
#include "tools/cli_flags.h"
#include "tools/phantom.h"

constexpr char kTool[] = "upp-eval-phantoms";

int main(int argc, char** argv) {
  CLI::App app{"Dice of a model on unseen synthetic phantoms"};
  std::string weights;
  int count = 20;
  uint64_t first_seed = 900000;
  upp::tools::RunFlags run(/*default_batch=*/2);
  upp::tools::PhantomGridFlags grid;
  app.add_option("--weights", weights, "safetensors with unetrpp_config and unetrpp_plan metadata")->required();
  app.add_option("--count", count, "phantoms");
  app.add_option("--first-seed", first_seed, "seed of the first phantom");
  grid.Register(app);
  run.Register(app);
  CLI11_PARSE(app, argc, argv);
  run.Apply();
  auto runner = upp::model::WindowRunner::FromWeightsFile(weights);
  if (!runner.ok()) return upp::tools::FailWith(kTool, runner.status());
  auto plan = upp::preprocessing::Plan::FromMetadata((*runner)->metadata());
  if (!plan.ok()) return upp::tools::FailWith(kTool, plan.status());
  const int classes = plan->num_classes;
  std::vector<double> sums(classes - 1, 0.0);
  nlohmann::json per_phantom = nlohmann::json::array();
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = first_seed + static_cast<uint64_t>(i);
    const auto geometry = upp::tools::RandomGeometry(seed, grid.max_inplane, grid.max_slices);
    const auto phantom = upp::tools::Rasterize(upp::tools::RandomAnatomy(seed), geometry, seed);
    upp::imageio::Volume v;
    v.geometry = geometry;
    const auto hu = upp::tools::ToInt16(phantom.hu);  // what a CT file holds
    v.voxels.assign(hu.begin(), hu.end());
    auto labels = upp::inference::SegmentVolume(std::move(v), *plan, upp::inference::RunnerFor(**runner), run.batch);
    if (!labels.ok()) return upp::tools::FailWith(kTool, labels.status());
    const auto dice = upp::tools::DicePerLabel(phantom.labels, labels->labels, classes);
    double mean = 0;
    for (int l = 0; l < classes - 1; ++l) {
      sums[l] += dice[l];
      mean += dice[l] / (classes - 1);
    }
    per_phantom.push_back(
        {{"seed", seed}, {"size", geometry.size}, {"spacing", geometry.spacing}, {"mean_dice", mean}});
    std::fprintf(stderr, "phantom %d/%d seed %llu: mean Dice %.4f\n", i + 1, count,
                 static_cast<unsigned long long>(seed), mean);
  }
  nlohmann::json out;
  double mean = 0;
  for (int l = 0; l < classes - 1; ++l) {
    std::string name = "label " + std::to_string(l + 1);
    for (const auto& info : plan->labels)
      if (info.value == l + 1) name = info.name;
    out["dice"][name] = sums[l] / count;
    mean += sums[l] / count / (classes - 1);
  }
  out["mean_dice"] = mean;
  out["phantoms"] = per_phantom;
  std::printf("%s\n", out.dump(1).c_str());
  return 0;
}
