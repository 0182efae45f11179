// upp-segment: the whole pipeline in one process, without the server: reads a
// NIfTI file or a directory of DICOM files, segments it, writes the label map
// (.nii.gz) and prints per-label voxel counts and volumes as JSON.
//
// The plan comes from --plan (a JSON file), else the weights' metadata
// ("unetrpp_plan"), else DefaultCtPlan() for the network's classes and patch.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "imageio/dicom.h"
#include "imageio/file_util.h"
#include "imageio/nifti.h"
#include "inference/job.h"
#include "inference/model_runner.h"
#include "model/window_runner.h"
#include "tools/cli_flags.h"

namespace {

constexpr char kTool[] = "upp-segment";

}  // namespace

int main(int argc, char** argv) {
  namespace pp = upp::preprocessing;
  namespace io = upp::imageio;
  namespace inference = upp::inference;
  CLI::App app{"Segment a volume with UNETR++ (offline, no server)"};
  std::string input, output, weights, plan_path, device = "cpu", precision = "fp32";
  upp::tools::RunFlags run;
  std::vector<int> mirror;
  app.add_option("input", input, "NIfTI file or DICOM directory")->required();
  app.add_option("-o,--output", output, "label map to write (.nii.gz)");
  app.add_option("--weights", weights, "safetensors weights (architecture in the metadata)")->required();
  app.add_option("--plan", plan_path, "plan JSON (default: the weights' metadata, else a CT default)");
  app.add_option("--device", device, "cpu, cuda, cuda:N");
  app.add_option("--precision", precision, "fp32 | bf16");
  run.Register(app);
  app.add_option("--mirror", mirror, "test-time mirroring axes (0=D 1=H 2=W)");
  CLI11_PARSE(app, argc, argv);
  run.Apply();

  auto runner = upp::model::WindowRunner::FromWeightsFile(weights, {device, precision});
  if (!runner.ok()) return upp::tools::FailWith(kTool, runner.status());
  const auto& config = (*runner)->config();
  auto plan =
      pp::PlanForNetwork(plan_path.empty() ? "" : io::ReadWholeFile(plan_path).value_or(""), (*runner)->metadata(),
                         static_cast<int>(config.num_classes), config.patch, static_cast<int>(config.in_channels));
  if (!plan.ok()) return upp::tools::FailWith(kTool, plan.status());

  io::NiftiHeaderInfo header;
  header.qform_code = header.sform_code = 1;
  io::Volume volume;
  if (std::filesystem::is_directory(input)) {
    auto files = io::ReadDirectoryFiles(input);
    if (!files.ok()) return upp::tools::FailWith(kTool, files.status());
    auto dicom = io::ReadDicomSeries(std::vector<std::string_view>(files->begin(), files->end()));
    if (!dicom.ok()) return upp::tools::FailWith(kTool, dicom.status());
    volume = std::move(dicom->volume);
  } else {
    auto nifti = io::ReadNiftiFile(input);
    if (!nifti.ok()) return upp::tools::FailWith(kTool, nifti.status());
    volume = std::move(nifti->volume);
    header = nifti->header;
  }
  inference::JobOptions options;
  if (!mirror.empty()) options.mirror_axes = mirror;
  const auto start = std::chrono::steady_clock::now();
  inference::StageTimes times;
  auto labels = inference::SegmentVolume(std::move(volume), *plan, upp::inference::RunnerFor(**runner), run.batch,
                                         options, &times);
  if (!labels.ok()) return upp::tools::FailWith(kTool, labels.status());
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!output.empty()) {
    auto bytes = io::WriteNiftiLabels(labels->geometry, labels->labels, header);
    if (!bytes.ok()) return upp::tools::FailWith(kTool, bytes.status());
    std::ofstream(output, std::ios::binary) << *bytes;
  }
  nlohmann::json j;
  j["seconds"] = total;
  // Seconds per pipeline stage (the window stages summed over windows;
  // "network" is what remains of the total).
  j["stage_seconds"] = {{"crop", times.crop},
                        {"resample", times.resample},
                        {"normalize", times.normalize},
                        {"extract", times.extract},
                        {"stitch", times.stitch},
                        {"resample_back", times.resample_back},
                        {"argmax_paste", times.argmax_paste},
                        {"network", total - times.crop - times.resample - times.normalize - times.extract -
                                        times.stitch - times.resample_back - times.argmax_paste}};
  j["size"] = labels->geometry.size;
  for (const auto& s : labels->stats) {
    std::string name = "label " + std::to_string(s.value);
    for (const auto& l : plan->labels)
      if (l.value == s.value) name = l.name;
    j["labels"].push_back({{"value", s.value}, {"name", name}, {"voxels", s.voxels}, {"volume_ml", s.volume_ml}});
  }
  std::printf("%s\n", j.dump(1).c_str());
  return 0;
}
