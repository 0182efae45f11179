#include "imageio/input_assembly.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "imageio/checked_math.h"

namespace upp::imageio {
namespace {

absl::StatusOr<AssembledInput> AssembleDicom(std::map<uint32_t, std::string>& inputs, const AssemblyOptions& options) {
  std::vector<std::string_view> files;
  for (const auto& [index, bytes] : inputs) files.emplace_back(bytes);
  DicomSeriesOptions dicom;
  dicom.modalities = options.modalities;
  dicom.series_instance_uid = options.series_instance_uid;
  dicom.max_voxels = options.max_voxels;
  if (options.admit) {
    // The float volume, and as much again for decoded frames.
    dicom.admit = [&](const Geometry& g) {
      return options.admit(g, OrMax(CheckedProduct({g.size[0], g.size[1], g.size[2], 8})));
    };
  }
  dicom.reserve = options.reserve;
  dicom.cancelled = options.cancelled;
  auto image = ReadDicomSeries(files, dicom);
  if (!image.ok()) return image.status();
  AssembledInput out;
  if (!image->info.file_indices.empty()) {
    auto it = inputs.begin();
    std::advance(it, image->info.file_indices[0]);
    out.description.dicom_source_instance = std::move(it->second);
  }
  out.description.dicom = std::move(image->info);
  out.description.nifti_header.qform_code = out.description.nifti_header.sform_code = 1;  // scanner coordinates
  out.volume = std::move(image->volume);
  return out;
}

absl::StatusOr<AssembledInput> AssembleNiftiChannels(std::map<uint32_t, std::string>& inputs,
                                                     const NiftiReadOptions& nifti, int channels) {
  if (static_cast<int>(inputs.size()) != channels)
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes ", channels, " channel(s); ", inputs.size(), " NIfTI inputs were sent"));
  AssembledInput out;
  Volume& volume = out.volume;
  for (auto& [index, bytes] : inputs) {
    if (index >= static_cast<uint32_t>(channels))
      return absl::InvalidArgumentError(absl::StrCat("input ", index, ": the model takes ", channels, " channel(s)"));
    auto image = ReadNifti(bytes, nifti);
    if (!image.ok())
      return absl::Status(image.status().code(), absl::StrCat("input ", index, ": ", image.status().message()));
    std::string().swap(bytes);
    if (image->volume.channels != 1)
      return absl::InvalidArgumentError(
          absl::StrCat("input ", index, " has ", image->volume.channels, " channels; one file per channel holds one"));
    if (index == 0) {
      volume.geometry = image->volume.geometry;
      out.description.nifti_header = image->header;
      volume.voxels.reserve(image->volume.voxels.size() * static_cast<size_t>(channels));
    } else if (!SameGeometry(volume.geometry, image->volume.geometry)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", index, " does not share input 0's geometry (size, spacing, origin, direction)"));
    }
    volume.voxels.insert(volume.voxels.end(), image->volume.voxels.begin(), image->volume.voxels.end());
  }
  volume.channels = channels;  // indices are exactly 0..C-1 (count and range checked)
  return out;
}

absl::StatusOr<AssembledInput> AssembleNifti(std::map<uint32_t, std::string>& inputs, const AssemblyOptions& options) {
  NiftiReadOptions nifti;
  nifti.max_voxels = options.max_voxels;
  nifti.cancelled = options.cancelled;
  if (options.admit)
    nifti.admit = [&](const Geometry& g, int64_t, int64_t read_bytes) { return options.admit(g, read_bytes); };
  absl::StatusOr<AssembledInput> out = absl::UnknownError("");
  if (inputs.size() == 1 && inputs.begin()->first == 0) {
    auto image = ReadNifti(inputs.begin()->second, nifti);
    if (!image.ok()) return image.status();
    out = AssembledInput{};
    out->description.nifti_header = image->header;
    out->volume = std::move(image->volume);
  } else {
    out = AssembleNiftiChannels(inputs, nifti, options.channels);
  }
  return out;
}

}  // namespace

bool SameGeometry(const Geometry& a, const Geometry& b) {
  if (a.size != b.size) return false;
  for (int i = 0; i < 3; ++i) {
    if (std::abs(a.spacing[i] - b.spacing[i]) > 1e-4 * std::max(1.0, a.spacing[i])) return false;
    if (std::abs(a.origin[i] - b.origin[i]) > 1e-3) return false;
  }
  for (int i = 0; i < 9; ++i)
    if (std::abs(a.direction[i] - b.direction[i]) > 1e-4) return false;
  return true;
}

absl::StatusOr<AssembledInput> AssembleInputs(std::map<uint32_t, std::string>& inputs, const AssemblyOptions& options) {
  if (inputs.empty()) return absl::InvalidArgumentError("no input");
  const auto files = static_cast<int64_t>(inputs.size());
  auto out = options.format == InputFormat::kDicom ? AssembleDicom(inputs, options) : AssembleNifti(inputs, options);
  if (out.ok() && out->volume.channels != options.channels)
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes ", options.channels, " channel(s); the input has ", out->volume.channels));
  if (out.ok()) out->description.files = files;
  return out;
}

}  // namespace upp::imageio
