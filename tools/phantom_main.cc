// upp-phantom: writes a synthetic abdominal CT phantom (tools/phantom.h) as
// NIfTI (image, and its true labels) and, on request, as a DICOM CT series.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "imageio/nifti.h"
#include "model/cpu_threads.h"
#include "tools/cli_flags.h"
#include "tools/phantom.h"

constexpr char kTool[] = "upp-phantom";

int main(int argc, char** argv) {
  CLI::App app{"Synthetic abdominal CT phantom with ground-truth labels"};
  uint64_t seed = 1;
  std::string image_path, labels_path, dicom_dir;
  upp::tools::PhantomGridFlags grid;
  std::vector<double> spacing, fov;
  app.add_option("--seed", seed, "the phantom's seed (anatomy, grid, noise)");
  app.add_option("-o,--image", image_path, "CT image to write (.nii.gz, int16 HU)");
  app.add_option("--labels", labels_path, "true labels to write (.nii.gz)");
  app.add_option("--dicom", dicom_dir, "also write a DICOM CT series into this directory");
  grid.Register(app);
  app.add_option("--spacing", spacing, "fixed spacing x y z (mm) instead of a random one")->expected(3);
  app.add_option("--fov", fov, "field of view x y z (mm) with --spacing")->expected(3);
  CLI11_PARSE(app, argc, argv);
  upp::model::ConfigureCpuThreads(0);

  const auto anatomy = upp::tools::RandomAnatomy(seed);
  upp::imageio::Geometry geometry = upp::tools::RandomGeometry(seed, grid.max_inplane, grid.max_slices);
  if (!spacing.empty()) {
    const std::array<double, 3> f =
        fov.empty() ? std::array<double, 3>{400, 400, 240} : std::array<double, 3>{fov[0], fov[1], fov[2]};
    geometry = upp::tools::GridFor({spacing[0], spacing[1], spacing[2]}, f);
  }
  const auto phantom = upp::tools::Rasterize(anatomy, geometry, seed);
  const auto hu = upp::tools::ToInt16(phantom.hu);
  upp::imageio::NiftiHeaderInfo header;
  header.qform_code = header.sform_code = 1;
  if (!image_path.empty()) {
    auto bytes = upp::imageio::WriteNiftiInt16(geometry, hu, header, "unetrpp-serve phantom");
    if (!bytes.ok()) return upp::tools::FailWith(kTool, bytes.status());
    std::ofstream(image_path, std::ios::binary) << *bytes;
  }
  if (!labels_path.empty()) {
    auto bytes = upp::imageio::WriteNiftiLabels(geometry, phantom.labels, header);
    if (!bytes.ok()) return upp::tools::FailWith(kTool, bytes.status());
    std::ofstream(labels_path, std::ios::binary) << *bytes;
  }
  if (!dicom_dir.empty()) {
    std::filesystem::create_directories(dicom_dir);
    const auto files = upp::tools::WriteCtSeries(geometry, hu, seed);
    if (files.empty()) return upp::tools::Fail(kTool, "DICOM encoding failed");
    for (size_t i = 0; i < files.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "/CT%05zu.dcm", i + 1);
      std::ofstream(dicom_dir + name, std::ios::binary) << files[i];
    }
  }
  std::printf("{\"seed\": %llu, \"size\": [%lld, %lld, %lld], \"spacing\": [%.3f, %.3f, %.3f]}\n",
              static_cast<unsigned long long>(seed), static_cast<long long>(geometry.size[0]),
              static_cast<long long>(geometry.size[1]), static_cast<long long>(geometry.size[2]), geometry.spacing[0],
              geometry.spacing[1], geometry.spacing[2]);
  return 0;
}
