// UNETR++ as LibTorch modules (see ../shared/spec/unetrpp.md and docs/model.md).
//
// Submodules and parameters are registered under the reference implementation's
// state-dict names and in its order, so StateDict() lists exactly the keys of a
// reference checkpoint and weights load by name. Forward passes compute the
// same function as the reference, but several layers take faster routes that
// are mathematically identical (see the comments in unetrpp.cc).
//
// Tensor layout: (B, C, D, H, W), D the slowest spatial axis.
//
// Threading: a module may run forward on one thread at a time per instance
// (LibTorch parallelises inside ops). Weights are not modified by forward.
#ifndef UPP_MODEL_UNETRPP_H_
#define UPP_MODEL_UNETRPP_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/onednn.h"

namespace upp::model {

// A 1x1x1 convolution as one matrix product per batch element (CPU).
torch::Tensor PointwiseConv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// MONAI's "Convolution" wrapper: a module whose only child is "conv".
// Kernel == stride for the transposed/strided cases used by UNETR++.
class ConvLayerImpl : public torch::nn::Module {
 public:
  enum class Kind { kConv, kTransposed };
  ConvLayerImpl(Kind kind, int64_t in, int64_t out, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  // Transposed layers only: the layer's output plus `skip` (same shape as the
  // output), computed in one pass; an undefined skip adds nothing.
  torch::Tensor TransposedAdd(const torch::Tensor& x, const torch::Tensor& skip) const;
  // The layer's convolution with other weights (e.g. batch norm folded in).
  torch::Tensor Conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) const;
  // Inference only: run the convolution in `dtype` (weights converted once,
  // inputs converted per call, outputs returned in the input's dtype).
  void SetComputeDtype(torch::ScalarType dtype);
  const torch::Tensor& weight() const { return weight_; }
  const torch::Tensor& bias() const { return bias_; }

 private:
  Kind kind_;
  std::array<int64_t, 3> kernel_, stride_, padding_;
  torch::Tensor weight_, bias_;
  torch::Tensor compute_weight_, compute_bias_;  // weight_ in the compute dtype, if different
  // The weights Conv() ran with, in the convolution kernel's layout (CPU).
  mutable std::shared_ptr<onednn::PackedWeights> packed_ = std::make_shared<onednn::PackedWeights>();
};
TORCH_MODULE(ConvLayer);

// MONAI/nnU-Net "UnetResBlock": conv3-norm-lrelu-conv3-norm (+ residual) - lrelu.
// Batch norm inside EPA blocks, instance norm (no affine) elsewhere.
class ResBlockImpl : public torch::nn::Module {
 public:
  enum class Norm { kBatch, kInstance };
  ResBlockImpl(int64_t in, int64_t out, Norm norm);
  torch::Tensor forward(const torch::Tensor& x);
  // Inference only: precomputes conv weights in `conv_dtype`, with the
  // eval-mode batch norms folded in; forward then uses them. Call again after
  // changing weights.
  void PrepareForInference(torch::ScalarType conv_dtype);

 private:
  torch::Tensor Normalize(const torch::Tensor& x, const torch::nn::BatchNorm3d& bn);
  Norm norm_;
  torch::Tensor folded_w1_, folded_b1_, folded_w2_, folded_b2_, folded_w3_, folded_b3_;
  ConvLayer conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm3d norm1_{nullptr}, norm2_{nullptr}, norm3_{nullptr};
};
TORCH_MODULE(ResBlock);

// Efficient paired attention on tokens (B, N, C).
class EpaImpl : public torch::nn::Module {
 public:
  EpaImpl(const ModelConfig& config, int64_t tokens, int64_t channels, int64_t proj);
  torch::Tensor forward(const torch::Tensor& x);
  // The reference's op-by-op formulation (B, N, C) -> (B, N, C).
  torch::Tensor ForwardReference(const torch::Tensor& x);

 private:
  // The CPU formulation for one batch element: y = qkvv output (N, 4C).
  torch::Tensor ForwardOne(const torch::Tensor& y);
  torch::Tensor ProjectE(const torch::Tensor& t);
  torch::Tensor ProjectF(const torch::Tensor& t);
  int64_t heads_;
  Projection projection_;
  Fusion fusion_;
  torch::Tensor temperature_, temperature2_, ef_;
  torch::nn::Linear qkvv_{nullptr}, e_{nullptr}, f_{nullptr}, out_proj_{nullptr}, out_proj2_{nullptr};
};
TORCH_MODULE(Epa);

// "TransformerBlock": pos-embedded tokens, EPA with a gamma-scaled residual,
// then one or two batch-norm residual conv blocks and a 1x1x1 conv residual.
class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(const ModelConfig& config, int64_t tokens, int64_t channels, int64_t proj);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor gamma_, pos_embed_;
  torch::nn::LayerNorm norm_{nullptr};
  Epa epa_{nullptr};
  ResBlock conv51_{nullptr}, conv52_{nullptr};
  torch::nn::Conv3d conv8_{nullptr};  // registered as conv8.1 (conv8.0 is a dropout)
};
TORCH_MODULE(TransformerBlock);

// Runs a ModuleList of TransformerBlocks in order.
torch::Tensor RunBlocks(const torch::nn::ModuleList& blocks, torch::Tensor x);

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const ModelConfig& config);
  // Returns the four stage outputs, each (B, C_s, D_s, H_s, W_s).
  std::vector<torch::Tensor> forward(const torch::Tensor& x);
  std::vector<ConvLayer>& down_convs() { return down_convs_; }

 private:
  ModelConfig config_;
  torch::nn::ModuleList downsample_layers_{nullptr};
  torch::nn::ModuleList stages_{nullptr};
  std::vector<ConvLayer> down_convs_;
  std::vector<torch::nn::GroupNorm> down_norms_;
  std::vector<torch::nn::ModuleList> stage_blocks_;
};
TORCH_MODULE(Encoder);

// "UnetrUpBlock": transposed conv (kernel = stride), add the skip, then EPA
// blocks, or (last decoder) one instance-norm residual block.
class UpBlockImpl : public torch::nn::Module {
 public:
  UpBlockImpl(const ModelConfig& config, int64_t in, int64_t out, std::array<int64_t, 3> up, int64_t tokens,
              bool conv_decoder);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& skip);

 private:
  ConvLayer transp_conv_{nullptr};
  torch::nn::ModuleList decoder_block_{nullptr};
  torch::nn::ModuleList epa_blocks_{nullptr};
  ResBlock res_block_{nullptr};
};
TORCH_MODULE(UpBlock);

// "UnetOutBlock": 1x1x1 conv with bias, registered as <name>.conv.conv.
class OutBlockImpl : public torch::nn::Module {
 public:
  OutBlockImpl(int64_t in, int64_t classes);
  torch::Tensor forward(const torch::Tensor& x) { return conv_->forward(x); }

 private:
  ConvLayer conv_{nullptr};
};
TORCH_MODULE(OutBlock);

class UnetrPPImpl : public torch::nn::Module {
 public:
  // The config must be valid (ModelConfig::Validate); model::Network checks.
  explicit UnetrPPImpl(const ModelConfig& config);
  // x: (B, in_channels, patch D, H, W) float. Returns {out1} or, with
  // deep_supervision, {out1, out2, out3} (out2/out3 at 1/2 and 1/4 of the
  // stem-grid resolution, as the reference computes them).
  std::vector<torch::Tensor> forward(const torch::Tensor& x, bool deep_supervision = false);
  const ModelConfig& config() const { return config_; }
  // Precomputes inference-only derived weights (batch norms folded into convs,
  // conv weights in conv_dtype). Call after loading weights or moving the
  // module; forward works without it, only slower.
  void PrepareForInference(torch::ScalarType conv_dtype = torch::kFloat32);

 private:
  ModelConfig config_;
  Encoder encoder_{nullptr};
  ResBlock encoder1_{nullptr};
  UpBlock decoder5_{nullptr}, decoder4_{nullptr}, decoder3_{nullptr}, decoder2_{nullptr};
  OutBlock out1_{nullptr}, out2_{nullptr}, out3_{nullptr};
};
TORCH_MODULE(UnetrPP);

// Parameters and buffers in PyTorch state_dict() order and naming: for each
// module (pre-order), its own parameters, then its own buffers, then its
// children. A tensor registered under two names (synapse's shared E/F) is
// listed under both.
std::vector<std::pair<std::string, torch::Tensor>> StateDict(const torch::nn::Module& module);

// Number of distinct trainable parameter elements (shared tensors counted once).
int64_t CountTrainableParameters(const torch::nn::Module& module);

}  // namespace upp::model

#endif  // UPP_MODEL_UNETRPP_H_
