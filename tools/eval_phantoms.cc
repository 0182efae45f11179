// upp-eval-phantoms: Dice per label of a model on unseen phantoms, through
// the whole pipeline (native random grid -> plan grid -> windows -> back).
// Seeds start at --first-seed (training used seeds derived from its own
// seed; the default here, 900000, is far from them).
//
// With --versus PRECISION the same phantoms also go through the model at that
// precision (e.g. bf16 against fp32): per-label Dice of both, their
// difference, and the share of voxels whose labels agree. --versus-crop MODE
// does the same with another crop (e.g. --crop body --versus-crop none: the
// body crop's agreement with the uncropped run, and the windows it saved);
// --fov-mm puts the phantoms in a wider field of view (air around the body),
// --shift-mm off its centre. The speed modes (docs/model.md, "Speed modes"):
// --versus-step 0.75 is `fast`, --versus-weights COARSE is `fastest`, and
// --subset liver,spleen --locator COARSE is a label subset as the server
// runs it (the locator's box of those labels, then only the windows that
// touch it; with --versus-step, the `fast` mode's, windows tiling it); each
// is compared with the truth and with the first run.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "absl/strings/str_split.h"
#include "imageio/labels.h"
#include "inference/job.h"
#include "inference/label_subset.h"
#include "inference/model_runner.h"
#include "model/window_runner.h"
#include "tools/cli_flags.h"
#include "tools/phantom.h"

namespace {

constexpr char kTool[] = "upp-eval-phantoms";

// Per-label means of `sums` over `count` phantoms, named from the plan.
nlohmann::json PerLabel(const std::vector<double>& sums, int count, const upp::preprocessing::Plan& plan) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t l = 0; l < sums.size(); ++l) {
    std::string name = "label " + std::to_string(l + 1);
    for (const auto& info : plan.labels)
      if (info.value == static_cast<int>(l + 1)) name = info.name;
    out[name] = sums[l] / count;
  }
  return out;
}

double Mean(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x / static_cast<double>(v.size());
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dice of a model on unseen synthetic phantoms"};
  std::string weights, precision = "fp32", versus, crop, versus_crop, versus_weights, subset, locator;
  double fov_mm = 0, shift_mm = 0, versus_step = 0, margin_mm = upp::inference::kDefaultSubsetMarginMm;
  int count = 20;
  uint64_t first_seed = 900000;
  upp::tools::RunFlags run(/*default_batch=*/2);
  upp::tools::PhantomGridFlags grid;
  app.add_option("--weights", weights, "safetensors with unetrpp_config and unetrpp_plan metadata")->required();
  app.add_option("--count", count, "phantoms");
  app.add_option("--first-seed", first_seed, "seed of the first phantom");
  app.add_option("--precision", precision, "fp32 | bf16");
  app.add_option("--versus", versus, "also run this precision and compare (e.g. bf16)");
  app.add_option("--crop", crop, "body | nonzero | none: instead of the plan's crop");
  app.add_option("--versus-crop", versus_crop, "also run with this crop and compare (e.g. none)");
  app.add_option("--fov-mm", fov_mm, "in-plane field of view (mm) instead of the random 380-460 (--max-inplane kept)");
  app.add_option("--shift-mm", shift_mm, "field of view moved posterior by this (mm): the body off-centre");
  app.add_option("--versus-step", versus_step, "also run at this window step and compare (fast: 0.75)");
  app.add_option("--versus-weights", versus_weights, "also run this model (same labels) and compare (fastest)");
  app.add_option("--subset", subset, "also run only these labels (comma-separated names), located by --locator");
  app.add_option("--locator", locator, "the model that locates --subset's labels (the fastest model)");
  app.add_option("--margin-mm", margin_mm, "--subset's box margin per side (mm)");
  double subset_inset = -1;
  app.add_option("--subset-inset", subset_inset,
                 "a `full` subset's window inset (JobOptions::region_inset) instead of kSubsetWindowInset");
  double locate_step = upp::inference::kLocateStep;
  app.add_option("--locate-step", locate_step,
                 "--locator's window step, without mirroring (default: the server's; 0: its plan's, mirroring too)");
  grid.Register(app);
  run.Register(app);
  CLI11_PARSE(app, argc, argv);
  run.Apply();
  auto runner = upp::model::WindowRunner::FromWeightsFile(weights, {"cpu", precision});
  if (!runner.ok()) return upp::tools::FailWith(kTool, runner.status());
  upp::inference::JobOptions options, other_options;
  for (auto [name, out] : {std::pair{crop, &options}, std::pair{versus_crop, &other_options}}) {
    if (name.empty()) continue;
    auto mode = upp::preprocessing::CropModeFromName(name);
    if (!mode) return upp::tools::Fail(kTool, "--crop and --versus-crop take body, nonzero or none, got " + name);
    out->crop = *mode;
  }
  if (versus_crop.empty()) other_options.crop = options.crop;
  if (versus_step > 0) upp::inference::ApplyFastMode(versus_step, &other_options);  // as the server runs `fast`
  if (!subset.empty() && locator.empty()) return upp::tools::Fail(kTool, "--subset needs --locator");
  std::unique_ptr<upp::model::WindowRunner> other, locating;
  if (!versus.empty() || !versus_weights.empty()) {
    auto r = upp::model::WindowRunner::FromWeightsFile(versus_weights.empty() ? weights : versus_weights,
                                                       {"cpu", versus.empty() ? precision : versus});
    if (!r.ok()) return upp::tools::FailWith(kTool, r.status());
    other = std::move(*r);
  }
  if (!locator.empty()) {
    auto r = upp::model::WindowRunner::FromWeightsFile(locator, {"cpu", precision});
    if (!r.ok()) return upp::tools::FailWith(kTool, r.status());
    locating = std::move(*r);
  }
  auto plan = upp::preprocessing::Plan::FromMetadata((*runner)->metadata());
  if (!plan.ok()) return upp::tools::FailWith(kTool, plan.status());
  const int classes = plan->num_classes;
  const bool compare = !versus.empty() || !versus_crop.empty() || versus_step > 0 || other || locating;
  upp::model::WindowRunner& other_runner = other ? *other : **runner;
  auto other_plan = upp::preprocessing::Plan::FromMetadata(other_runner.metadata());
  if (!other_plan.ok()) return upp::tools::FailWith(kTool, other_plan.status());
  std::optional<upp::preprocessing::Plan> locator_plan;
  std::vector<int> subset_values;
  if (locating) {
    auto p = upp::preprocessing::Plan::FromMetadata(locating->metadata());
    if (!p.ok()) return upp::tools::FailWith(kTool, p.status());
    locator_plan = *std::move(p);
    for (const std::string& name : std::vector<std::string>(absl::StrSplit(subset, ','))) {
      const auto value = upp::imageio::FindLabelValue(plan->labels, name);
      if (!value) return upp::tools::Fail(kTool, "--subset: no label \"" + std::string(name) + "\"");
      subset_values.push_back(*value);
    }
  }
  // The second run: another precision, crop, step or model, or the subset.
  const auto run_other = [&](upp::imageio::Volume v, upp::inference::CropReport* report,
                             int64_t* located_windows) -> absl::StatusOr<upp::inference::LabelMap> {
    if (!locating)
      return upp::inference::SegmentVolume(std::move(v), *other_plan, upp::inference::RunnerFor(other_runner),
                                           run.batch, other_options, nullptr, report);
    upp::inference::CropReport located_report;
    upp::inference::JobOptions locate;  // 0: the locator plan's step and mirroring
    if (locate_step > 0) {
      locate = upp::inference::LocatingOptions();
      locate.step = locate_step;
    }
    auto located = upp::inference::SegmentVolume(v, *locator_plan, upp::inference::RunnerFor(*locating), run.batch,
                                                 locate, nullptr, &located_report);
    if (!located.ok()) return located.status();
    *located_windows = located_report.windows_uncropped - located_report.windows_skipped;
    // As the server: `fast` (a step given) tiles the box, `full` keeps the whole run's windows.
    upp::inference::JobOptions region = other_options;
    const bool aimed = upp::inference::AimAtLabels(*located, subset_values, margin_mm, versus_step > 0, &region);
    if (subset_inset >= 0 && versus_step <= 0) region.region_inset = subset_inset;
    auto labels = aimed ? upp::inference::SegmentVolume(std::move(v), *plan, upp::inference::RunnerFor(**runner),
                                                        run.batch, region, nullptr, report)
                        : std::move(located);  // none located: background, as the server answers
    if (labels.ok()) upp::inference::KeepLabels(subset_values, &*labels);
    return labels;
  };
  std::vector<double> sums(classes - 1, 0.0), other_sums(classes - 1, 0.0), versus_first(classes - 1, 0.0),
      versus_first_min(classes - 1, 1.0), agreements;
  int64_t windows = 0, windows_uncropped = 0, other_windows = 0, locator_windows = 0;
  nlohmann::json per_phantom = nlohmann::json::array();
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = first_seed + static_cast<uint64_t>(i);
    auto geometry = upp::tools::RandomGeometry(seed, grid.max_inplane, grid.max_slices);
    if (fov_mm > 0) {  // at most --max-inplane voxels across: coarser in-plane spacing where needed
      const double s = std::max(geometry.spacing[0], fov_mm / static_cast<double>(grid.max_inplane));
      geometry =
          upp::tools::GridFor({s, s, geometry.spacing[2]}, {fov_mm, fov_mm, geometry.size[2] * geometry.spacing[2]});
    }
    geometry.origin[1] += shift_mm;
    const auto phantom = upp::tools::Rasterize(upp::tools::RandomAnatomy(seed), geometry, seed);
    upp::imageio::Volume v;
    v.geometry = geometry;
    const auto hu = upp::tools::ToInt16(phantom.hu);  // what a CT file holds
    v.voxels.assign(hu.begin(), hu.end());
    // The volume is copied only when a second run needs it.
    upp::imageio::Volume for_other = compare ? v : upp::imageio::Volume{};
    upp::inference::CropReport cropped, other_cropped;
    auto labels = upp::inference::SegmentVolume(std::move(v), *plan, upp::inference::RunnerFor(**runner), run.batch,
                                                options, nullptr, &cropped);
    if (!labels.ok()) return upp::tools::FailWith(kTool, labels.status());
    windows += cropped.windows_uncropped - cropped.windows_skipped;
    windows_uncropped += cropped.windows_uncropped;
    const auto dice = upp::tools::DicePerLabel(phantom.labels, labels->labels, classes);
    for (int l = 0; l < classes - 1; ++l) sums[l] += dice[l];
    nlohmann::json row = {{"seed", seed},
                          {"size", geometry.size},
                          {"spacing", geometry.spacing},
                          {"mean_dice", Mean(dice)},
                          {"crop", CropModeName(cropped.mode)},
                          {"windows", cropped.windows_uncropped - cropped.windows_skipped},
                          {"windows_skipped", cropped.windows_skipped}};
    if (compare) {
      int64_t located = 0;
      auto other_labels = run_other(std::move(for_other), &other_cropped, &located);
      if (!other_labels.ok()) return upp::tools::FailWith(kTool, other_labels.status());
      other_windows += other_cropped.windows_uncropped - other_cropped.windows_skipped + located;
      locator_windows += located;
      row["windows_versus"] = other_cropped.windows_uncropped - other_cropped.windows_skipped + located;
      // Against the first run: a subset's labels only (the rest is background
      // by design), every label otherwise.
      const auto first = upp::tools::DicePerLabel(labels->labels, other_labels->labels, classes);
      for (int l = 0; l < classes - 1; ++l) {
        versus_first[l] += first[l];
        versus_first_min[l] = std::min(versus_first_min[l], first[l]);
      }
      const auto other_dice = upp::tools::DicePerLabel(phantom.labels, other_labels->labels, classes);
      for (int l = 0; l < classes - 1; ++l) other_sums[l] += other_dice[l];
      agreements.push_back(upp::tools::LabelAgreement(labels->labels, other_labels->labels));
      row["mean_dice_versus"] = Mean(other_dice);
      row["label_agreement"] = agreements.back();
    }
    per_phantom.push_back(row);
    std::fprintf(stderr, "phantom %d/%d seed %llu: mean Dice %.4f%s\n", i + 1, count,
                 static_cast<unsigned long long>(seed), Mean(dice),
                 compare ? (", versus " + std::to_string(row["mean_dice_versus"].get<double>()) + ", agreement " +
                            std::to_string(agreements.back()))
                               .c_str()
                         : "");
  }
  nlohmann::json out;
  out["precision"] = precision;
  out["dice"] = PerLabel(sums, count, *plan);
  out["mean_dice"] = Mean(sums) / count;
  out["crop"] = CropModeName(options.crop.value_or(plan->ResolvedCrop()));
  out["windows"] = windows;
  out["windows_uncropped"] = windows_uncropped;
  if (compare) {
    out["versus"] = versus.empty() ? precision : versus;
    out["versus_crop"] = CropModeName(other_options.crop.value_or(plan->ResolvedCrop()));
    out["windows_versus"] = other_windows;
    if (locating) {
      out["subset"] = subset;
      out["subset_inset"] = versus_step > 0     ? 0.0
                            : subset_inset >= 0 ? subset_inset
                                                : upp::inference::kSubsetWindowInset;
      out["locator_windows"] = locator_windows;
      nlohmann::json min_dice = nlohmann::json::object();
      for (int v : subset_values)
        for (const auto& info : plan->labels)
          if (info.value == v) min_dice[info.name] = versus_first_min[v - 1];
      out["subset_dice_versus_first_min"] = min_dice;
    }
    out["dice_versus"] = PerLabel(other_sums, count, *plan);
    out["dice_versus_against_first"] = PerLabel(versus_first, count, *plan);
    out["mean_dice_versus"] = Mean(other_sums) / count;
    out["mean_dice_versus_against_first"] = Mean(versus_first) / count;
    double max_difference = 0;
    for (int l = 0; l < classes - 1; ++l)
      max_difference = std::max(max_difference, std::abs(other_sums[l] - sums[l]) / count);
    out["max_abs_dice_difference"] = max_difference;
    out["label_agreement_min"] = *std::min_element(agreements.begin(), agreements.end());
    out["label_agreement_mean"] = Mean(agreements);
  }
  out["phantoms"] = per_phantom;
  std::printf("%s\n", out.dump(1).c_str());
  return 0;
}
