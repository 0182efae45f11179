// The architecture of a UNETR++ network: the four published presets and free
// parameters, validation, and (de)serialisation as JSON (stored in the
// safetensors __metadata__ block under "unetrpp_config").
//
// Axis order: every 3-vector here (patch, stem) is in tensor order (D, H, W),
// D being the slowest spatial axis (slices). See docs/axes.md.
//
// Torch-free, so the server can include it cheaply.
#ifndef UPP_MODEL_CONFIG_H_
#define UPP_MODEL_CONFIG_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/status.h"

namespace upp::model {

// How the EPA block projects keys and values along the token axis (N -> P).
enum class Projection {
  kSharedLinear,    // synapse: one nn.Linear stored under both "E" and "F".
  kSeparateLinear,  // acdc, lung: two nn.Linear "E" and "F".
  kSharedMatrix,    // tumor: one (N x P) parameter "EF", no bias.
};

// How the EPA block fuses its spatial and channel attention outputs.
enum class Fusion {
  kConcatProjected,  // cat(out_proj(x_SA), out_proj2(x_CA)): synapse, acdc, lung.
  kSum,              // x_SA + x_CA: tumor.
};

struct ModelConfig {
  std::string preset;  // "synapse", "acdc", "lung", "tumor" or "custom".
  int64_t in_channels = 1;
  int64_t num_classes = 14;
  std::array<int64_t, 3> patch{64, 128, 128};  // (D, H, W)
  std::array<int64_t, 3> stem{2, 4, 4};        // stem conv kernel = stride, (D, H, W)
  int64_t feature_size = 16;                   // f; stage widths are 2f, 4f, 8f, 16f.
  std::array<int64_t, 4> depths{3, 3, 3, 3};   // EPA blocks per encoder stage.
  int64_t decoder_depth = 3;                   // EPA blocks per decoder stage.
  int64_t num_heads = 4;
  std::array<int64_t, 4> proj_sizes{64, 64, 64, 32};  // P per encoder stage.
  int64_t decoder_proj_size = 64;                     // P in the decoders.
  Projection projection = Projection::kSharedLinear;
  Fusion fusion = Fusion::kConcatProjected;
  int64_t res_blocks_after_epa = 1;  // conv51 (1) or conv51 + conv52 (2).

  // Channel width of encoder stage s (0..3): 2f * 2^s.
  int64_t StageDim(int s) const { return 2 * feature_size << s; }
  // Token grid of encoder stage s, (D, H, W): patch / stem / 2^s.
  std::array<int64_t, 3> StageGrid(int s) const;
  // Tokens at encoder stage s: prod(StageGrid(s)). Derived, never configured.
  int64_t StageTokens(int s) const;

  // Checks every constraint the network needs; the message names the field.
  Status Validate() const;

  std::string ToJson() const;
  static StatusOr<ModelConfig> FromJson(const std::string& json);
};

// The published configuration of a dataset ("synapse", "acdc", "lung",
// "tumor"), full size. NOT_FOUND for other names.
StatusOr<ModelConfig> Preset(const std::string& name);
std::vector<std::string> PresetNames();

}  // namespace upp::model

#endif  // UPP_MODEL_CONFIG_H_
