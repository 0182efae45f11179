#include "preprocessing/preprocess.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/status/status.h"
#include "imageio/checked_math.h"

namespace upp::preprocessing {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

}  // namespace

std::array<double, 3> TensorSpacing(const imageio::Geometry& g, const std::array<int, 3>& transpose) {
  const std::array<double, 3> zyx{g.spacing[2], g.spacing[1], g.spacing[0]};
  return {zyx[transpose[0]], zyx[transpose[1]], zyx[transpose[2]]};
}

std::array<int64_t, 3> TensorSize(const imageio::Geometry& g, const std::array<int, 3>& transpose) {
  const std::array<int64_t, 3> zyx{g.size[2], g.size[1], g.size[0]};
  return {zyx[transpose[0]], zyx[transpose[1]], zyx[transpose[2]]};
}

std::array<int64_t, 3> PaddedGridBound(const imageio::Geometry& geometry, const Plan& plan) {
  const auto grid =
      ResampledSize(TensorSize(geometry, plan.transpose), TensorSpacing(geometry, plan.transpose), plan.target_spacing);
  std::array<int64_t, 3> padded;
  for (int a = 0; a < 3; ++a) padded[a] = std::max(grid[a], plan.patch[a]);
  return padded;
}

VoxelBox CropBox(const imageio::Volume& volume, CropMode mode) {
  const auto& g = volume.geometry;
  const std::array<int64_t, 3> size{g.size[2], g.size[1], g.size[0]};
  if (mode != CropMode::kNonzero) return {{{0, size[0]}, {0, size[1]}, {0, size[2]}}};
  const torch::Tensor x = torch::from_blob(const_cast<float*>(volume.voxels.data()),
                                           {volume.channels, size[0], size[1], size[2]}, torch::kFloat);
  return NonzeroBoundingBox(x);
}

absl::StatusOr<Preprocessed> Preprocess(imageio::Volume volume, const Plan& p, torch::Device device) {
  torch::NoGradGuard no_grad;
  Preprocessed out;
  const auto& g = volume.geometry;
  auto start = Clock::now();
  // Zero-copy view of the caller's voxels, (C, z, y, x).
  torch::Tensor x =
      torch::from_blob(volume.voxels.data(), {volume.channels, g.size[2], g.size[1], g.size[0]}, torch::kFloat);
  out.cropped_to = p.ResolvedCrop();
  out.crop = CropBox(volume, out.cropped_to);
  if (out.cropped_to == CropMode::kBody) {
    const Body body = FindBody(volume.voxels.data(), {g.size[2], g.size[1], g.size[0]});  // channel 0 first
    if (body.found) {
      out.body = body.box;
    } else {
      out.cropped_to = CropMode::kNone;
    }
  }
  for (int a = 0; a < 3; ++a) x = x.narrow(a + 1, out.crop[a][0], out.crop[a][1] - out.crop[a][0]);
  x = x.permute({0, 1 + p.transpose[0], 1 + p.transpose[1], 1 + p.transpose[2]});
  for (int a = 0; a < 3; ++a) out.cropped_t[a] = x.size(a + 1);
  if (device != torch::kCPU) x = x.to(device);
  out.crop_seconds = Seconds(start);

  start = Clock::now();
  const std::array<double, 3> spacing = TensorSpacing(g, p.transpose);
  out.grid = ResampledSize(out.cropped_t, spacing, p.target_spacing);
  // The accumulators are classes x grid floats: refuse a grid whose size
  // cannot even be formed (the server's admission refuses far smaller).
  if (!imageio::CheckedProduct({std::max(out.grid[0], p.patch[0]), std::max(out.grid[1], p.patch[1]),
                                std::max(out.grid[2], p.patch[2]), p.num_classes, 4, volume.channels + 1}))
    return absl::InvalidArgumentError("the resampled grid is too large (check the input's spacing)");
  out.modes = ResamplingModes(spacing, p.target_spacing, p.anisotropy_threshold);
  torch::Tensor nonzero;  // resampled non-zero mask, when a channel needs it
  for (const auto& norm : p.normalization)
    if (norm.scheme == ChannelNormalization::Scheme::kZScore && norm.use_nonzero_mask) {
      torch::Tensor mask = (x != 0).any(0, /*keepdim=*/true).to(torch::kFloat);
      nonzero = ResampleSeparable(mask, out.grid, out.modes)[0] > 0.5f;
      break;
    }
  torch::Tensor data = ResampleSeparable(x, out.grid, out.modes);
  if (data.storage().data() == volume.voxels.data() || !data.is_contiguous())
    data = data.contiguous().clone();  // unchanged size: still the caller's buffer
  x = torch::Tensor();
  std::vector<float>().swap(volume.voxels);  // the input's memory goes back now
  out.resample_seconds = Seconds(start);

  start = Clock::now();
  for (int64_t c = 0; c < data.size(0); ++c) {
    const auto& norm = p.normalization[c];
    torch::Tensor ch = data[c];
    switch (norm.scheme) {
      case ChannelNormalization::Scheme::kCT:
        ch.clamp_(norm.clip_low, norm.clip_high).sub_(norm.mean).div_(norm.std);
        break;
      case ChannelNormalization::Scheme::kZScore: {
        const bool masked = norm.use_nonzero_mask && nonzero.defined();
        const torch::Tensor values = masked ? ch.masked_select(nonzero) : ch;
        if (values.numel() == 0) break;
        const torch::Tensor v64 = values.to(torch::kDouble);
        const double mean = v64.mean().item<double>();
        const double sd = v64.std(/*unbiased=*/false).item<double>();
        ch.sub_(mean).div_(sd + 1e-8);
        if (masked) ch.masked_fill_(nonzero.logical_not(), 0.0f);
        break;
      }
      case ChannelNormalization::Scheme::kNone: break;
    }
  }
  // Pad with zeros (after normalisation, as nnU-Net) to at least the patch,
  // symmetrically (the odd voxel after).
  std::vector<int64_t> pad;  // F::pad order: last axis first
  for (int a = 2; a >= 0; --a) {
    const int64_t diff = std::max<int64_t>(0, p.patch[a] - out.grid[a]);
    out.pad_before[a] = diff / 2;
    pad.push_back(diff / 2);
    pad.push_back(diff - diff / 2);
  }
  if (std::any_of(pad.begin(), pad.end(), [](int64_t v) { return v > 0; }))
    data = torch::constant_pad_nd(data, pad, 0.0);
  out.data = data;
  out.normalize_seconds = Seconds(start);

  return out;
}

}  // namespace upp::preprocessing
