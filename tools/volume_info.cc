// upp-volume-info: reads a volume (NIfTI for now) and prints its geometry and
// voxel statistics as JSON, for scripts and for cross-checks against other
// readers (tests/preprocessing compares it with nibabel).
//
//   upp-volume-info FILE [--voxels i,j,k ...]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "imageio/dicom.h"
#include "imageio/dicom_seg.h"
#include "imageio/file_util.h"
#include "imageio/nifti.h"

// Test labels derived from the first channel: |round(value)| mod `mod`, NaN -> 0.
std::vector<uint16_t> LabelsFromVoxels(const std::vector<float>& voxels, int64_t count, int mod) {
  std::vector<uint16_t> labels(static_cast<size_t>(count));
  for (size_t i = 0; i < labels.size(); ++i) {
    const double x = voxels[i];
    labels[i] = std::isfinite(x) ? static_cast<uint16_t>(static_cast<int64_t>(std::abs(std::llround(x))) % mod) : 0;
  }
  return labels;
}

namespace {

struct Args {
  std::string path, write_labels, write_seg, series;
  int label_mod = 256;
  bool any_modality = false;
  int64_t max_voxels = int64_t{1} << 30;
};

// A DICOM series: every regular file in the directory; with --write-seg, a
// DICOM SEG of the labels derived from the values.
absl::StatusOr<upp::imageio::NiftiImage> ReadDicomDirectory(const Args& args) {
  auto read = upp::imageio::ReadDirectoryFiles(args.path);
  if (!read.ok()) return read.status();
  const std::vector<std::string>& contents = *read;
  std::vector<std::string_view> views(contents.begin(), contents.end());
  upp::imageio::DicomSeriesOptions dicom_options;
  if (args.any_modality) dicom_options.modalities.clear();
  dicom_options.max_voxels = args.max_voxels;
  dicom_options.series_instance_uid = args.series;
  auto dicom = upp::imageio::ReadDicomSeries(views, dicom_options);
  if (!dicom.ok()) return dicom.status();
  if (!args.write_seg.empty()) {
    const auto& g = dicom->volume.geometry;
    const auto labels = LabelsFromVoxels(dicom->volume.voxels, g.NumVoxels(), args.label_mod);
    std::vector<upp::imageio::LabelInfo> segments;
    for (int l = 1; l < args.label_mod; ++l)
      segments.push_back({l,
                          "label " + std::to_string(l),
                          {static_cast<uint8_t>(40 * l % 256), 128, static_cast<uint8_t>(255 - 30 * l % 256)}});
    auto seg = upp::imageio::WriteDicomSeg(g, labels, dicom->info, views[dicom->info.file_indices[0]], segments,
                                           {"UNETR++", "0.1.0"});
    if (!seg.ok()) return seg.status();
    std::ofstream(args.write_seg, std::ios::binary) << *seg;
  }
  upp::imageio::NiftiImage as_nifti;
  as_nifti.volume = std::move(dicom->volume);
  as_nifti.header.qform_code = as_nifti.header.sform_code = 1;  // scanner coordinates
  return as_nifti;
}

// The geometry and voxel statistics as one JSON line.
void PrintInfo(const upp::imageio::NiftiImage& image) {
  const auto& v = image.volume;
  const auto& g = v.geometry;
  // NaN voxels (legal in float NIfTI files) are counted, not summed, so the
  // output stays valid JSON.
  double sum = 0, weighted = 0;
  int64_t nan_count = 0;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (size_t i = 0; i < v.voxels.size(); ++i) {
    const float x = v.voxels[i];
    if (std::isnan(x)) {
      ++nan_count;
      continue;
    }
    sum += x;
    weighted += x * static_cast<double>(i % 9973);  // order-sensitive checksum
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (lo > hi) lo = hi = 0;  // no finite voxel
  std::printf(
      "{\"size\": [%ld, %ld, %ld], \"channels\": %ld, \"spacing\": [%.9g, %.9g, %.9g], "
      "\"origin\": [%.9g, %.9g, %.9g], \"direction\": [%.9g, %.9g, %.9g, %.9g, %.9g, %.9g, %.9g, "
      "%.9g, %.9g], \"sum\": %.17g, \"weighted_sum\": %.17g, \"min\": %.9g, \"max\": %.9g, "
      "\"nan_count\": %ld, \"nifti_version\": %d, \"qform_code\": %d, \"sform_code\": %d, "
      "\"big_endian\": %s}\n",
      g.size[0], g.size[1], g.size[2], v.channels, g.spacing[0], g.spacing[1], g.spacing[2], g.origin[0], g.origin[1],
      g.origin[2], g.direction[0], g.direction[1], g.direction[2], g.direction[3], g.direction[4], g.direction[5],
      g.direction[6], g.direction[7], g.direction[8], sum, weighted, lo, hi, nan_count, image.header.version,
      image.header.qform_code, image.header.sform_code, image.header.big_endian ? "true" : "false");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Print a volume's geometry and voxel statistics as JSON"};
  Args args;
  app.add_option("--write-seg", args.write_seg,
                 "DICOM input: also write a DICOM SEG of the labels defined as for --write-labels");
  app.add_option("--max-voxels", args.max_voxels, "refuse volumes with more voxels");
  app.add_flag("--any-modality", args.any_modality, "DICOM: accept series of any modality");
  app.add_option("--series", args.series, "DICOM: the SeriesInstanceUID to read when the folder holds several");
  app.add_option("file", args.path, "NIfTI file (.nii or .nii.gz), or a directory of DICOM files")->required();
  app.add_option("--write-labels", args.write_labels,
                 "also write a label map with the input's geometry: label = |round(value)| mod "
                 "--label-mod (NaN -> 0), from channel 0, as .nii.gz");
  app.add_option("--label-mod", args.label_mod, "modulus for --write-labels (1..65536)")->check(CLI::Range(1, 65536));
  CLI11_PARSE(app, argc, argv);
  absl::StatusOr<upp::imageio::NiftiImage> image;
  if (std::filesystem::is_directory(args.path)) {
    image = ReadDicomDirectory(args);
  } else {
    upp::imageio::NiftiReadOptions nifti_options;
    nifti_options.max_voxels = args.max_voxels;
    image = upp::imageio::ReadNiftiFile(args.path, nifti_options);
  }
  if (!image.ok()) {
    std::fprintf(stderr, "upp-volume-info: %s\n", image.status().ToString().c_str());
    return 1;
  }
  if (!args.write_labels.empty()) {
    const auto& g = image->volume.geometry;
    const auto labels = LabelsFromVoxels(image->volume.voxels, g.NumVoxels(), args.label_mod);
    auto bytes = upp::imageio::WriteNiftiLabels(g, labels, image->header);
    if (!bytes.ok()) {
      std::fprintf(stderr, "upp-volume-info: %s\n", bytes.status().ToString().c_str());
      return 1;
    }
    std::ofstream(args.write_labels, std::ios::binary) << *bytes;
  }
  PrintInfo(*image);
  return 0;
}
