// upp-dice: Dice per label of a label map against a reference (both NIfTI on
// the same grid), with the phantom label names; JSON on stdout.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "imageio/nifti.h"
#include "tools/phantom.h"

int main(int argc, char** argv) {
  CLI::App app{"Dice per label against a reference label map"};
  std::string truth_path, labels_path;
  app.add_option("truth", truth_path, "reference labels (.nii/.nii.gz)")->required();
  app.add_option("labels", labels_path, "labels to score (.nii/.nii.gz)")->required();
  CLI11_PARSE(app, argc, argv);
  auto truth = upp::imageio::ReadNiftiFile(truth_path);
  auto labels = upp::imageio::ReadNiftiFile(labels_path);
  if (!truth.ok() || !labels.ok()) {
    std::fprintf(stderr, "upp-dice: %s\n", (truth.ok() ? labels.status() : truth.status()).ToString().c_str());
    return 1;
  }
  if (truth->volume.geometry.size != labels->volume.geometry.size) {
    std::fprintf(stderr, "upp-dice: the label maps have different sizes\n");
    return 1;
  }
  auto to_u16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<uint16_t>(v[i]);
    return out;
  };
  const auto names = upp::tools::PhantomLabels();
  const auto dice = upp::tools::DicePerLabel(to_u16(truth->volume.voxels), to_u16(labels->volume.voxels),
                                             static_cast<int>(names.size()));
  nlohmann::json j;
  double mean = 0;
  for (size_t l = 0; l < dice.size(); ++l) {
    j["dice"][names[l + 1].name] = dice[l];
    mean += dice[l] / static_cast<double>(dice.size());
  }
  j["mean_dice"] = mean;
  std::printf("%s\n", j.dump(1).c_str());
  return 0;
}
