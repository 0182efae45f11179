#include "model/unetrpp.h"

#include <ATen/record_function.h>

#include <cmath>
#include <unordered_set>

#include "model/onednn.h"

namespace upp::model {
namespace {

constexpr double kNormEps = 1e-5;
constexpr double kLeakySlope = 0.01;
using A3 = std::array<int64_t, 3>;

torch::Tensor RegisterUniform(torch::nn::Module& m, const std::string& name, std::vector<int64_t> shape,
                              int64_t fan_in) {
  // PyTorch's default init for conv/linear (kaiming_uniform with a = sqrt(5)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(fan_in, 1)));
  return m.register_parameter(name, torch::empty(shape).uniform_(-bound, bound));
}

// Instance norm without affine parameters or running statistics is group norm
// with one group per channel (same statistics, same biased variance, same
// eps); ATen's group_norm kernel is much faster on CPU than instance_norm,
// which goes through batch_norm on a reshaped (1, B*C, ...) view.
torch::Tensor InstanceNorm(const torch::Tensor& x, bool differentiable = false) {
  if (!differentiable && x.is_cpu() && x.scalar_type() == torch::kFloat32) return onednn::InstanceNorm(x, kNormEps);
  return torch::group_norm(x.contiguous(), x.size(1), {}, {}, kNormEps);
}

// Training (module in train mode, autograd on) takes plain differentiable ATen
// ops, out of place; inference keeps the oneDNN, in-place and folded paths,
// whose kernels autograd cannot see through.
bool Differentiable(const torch::nn::Module& m) { return m.is_training() && torch::GradMode::is_enabled(); }

}  // namespace

// ---------------------------------------------------------------- ConvLayer

ConvLayerImpl::ConvLayerImpl(Kind kind, int64_t in, int64_t out, std::array<int64_t, 3> kernel,
                             std::array<int64_t, 3> stride, bool bias)
    : kind_(kind), kernel_(kernel), stride_(stride) {
  // MONAI's get_padding: (kernel - stride + 1) / 2, rounded down.
  for (int i = 0; i < 3; ++i) padding_[i] = (kernel[i] - stride[i] + 1) / 2;
  auto holder =
      register_module("conv", std::make_shared<torch::nn::Module>(kind == Kind::kConv ? "Conv3d" : "ConvTranspose3d"));
  const int64_t k = kernel[0] * kernel[1] * kernel[2];
  if (kind == Kind::kConv) {
    weight_ = RegisterUniform(*holder, "weight", {out, in, kernel[0], kernel[1], kernel[2]}, in * k);
  } else {
    // PyTorch computes a transposed conv's fan-in from weight.size(1) = out.
    weight_ = RegisterUniform(*holder, "weight", {in, out, kernel[0], kernel[1], kernel[2]}, out * k);
  }
  if (bias) bias_ = RegisterUniform(*holder, "bias", {out}, kind == Kind::kConv ? in * k : out * k);
}

torch::Tensor ConvLayerImpl::forward(const torch::Tensor& x) {
  if (Differentiable(*this)) {
    const std::vector<int64_t> stride(stride_.begin(), stride_.end());
    if (kind_ == Kind::kTransposed) return torch::conv_transpose3d(x, weight_, bias_, stride);
    const std::vector<int64_t> padding(padding_.begin(), padding_.end());
    return torch::conv3d(x, weight_, bias_, stride, padding);
  }
  if (kind_ == Kind::kTransposed) return TransposedAdd(x, torch::Tensor());
  if (compute_weight_.defined()) return Conv(x, compute_weight_, compute_bias_);
  return Conv(x, weight_, bias_);
}

torch::Tensor ConvLayerImpl::TransposedAdd(const torch::Tensor& x, const torch::Tensor& skip) const {
  // Kernel == stride, no padding: every output voxel receives exactly one
  // kernel tap, so the transposed conv is one GEMM per batch element,
  // (Cout*kd*kh*kw x Cin) @ (Cin x D*H*W), followed by a "pixel shuffle" that
  // interleaves the taps. ATen's CPU ConvTranspose3d takes a slow col2vol
  // route instead. The shuffle is a strided view that the skip addition reads
  // directly, so the upsampled tensor is written once.
  TORCH_CHECK(kind_ == Kind::kTransposed && kernel_ == stride_, "transposed conv supports kernel == stride only");
  if (Differentiable(*this)) {
    auto y = torch::conv_transpose3d(x, weight_, bias_, std::vector<int64_t>(stride_.begin(), stride_.end()));
    return skip.defined() ? y + skip : y;
  }
  const int64_t b = x.size(0), cin = x.size(1), d = x.size(2), h = x.size(3), w = x.size(4);
  const int64_t cout = weight_.size(1);
  auto [kd, kh, kw] = kernel_;
  // Output and skip in channels-last: with the weight's columns ordered
  // (kd, kh, kw, Cout), the GEMM's rows are voxels and each tap writes
  // contiguous runs of Cout values.
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  auto wt = weight_.permute({0, 2, 3, 4, 1}).reshape({cin, kd * kh * kw * cout});
  auto xt = x.permute({0, 2, 3, 4, 1}).reshape({b, d * h * w, cin});
  auto y = torch::empty({b, cout, d * kd, h * kh, w * kw}, x.options().memory_format(cl));
  TORCH_CHECK(!skip.defined() || skip.sizes() == y.sizes(), "skip connection has the wrong size");
  auto skip_cl = skip.defined() ? skip.contiguous(cl) : skip;
  for (int64_t i = 0; i < b; ++i) {
    auto cols = onednn::Matmul(xt[i], wt);  // (DHW, kd*kh*kw*Cout)
    auto taps = cols.view({d, h, w, kd, kh, kw, cout}).permute({0, 3, 1, 4, 2, 5, 6});
    const std::vector<int64_t> shape7{d, kd, h, kh, w, kw, cout};
    auto dst = y[i].permute({1, 2, 3, 0}).view(shape7);
    if (skip.defined()) {
      torch::add_out(dst, skip_cl[i].permute({1, 2, 3, 0}).view(shape7), taps);
    } else {
      dst.copy_(taps);
    }
  }
  if (bias_.defined()) y.add_(bias_.view({1, cout, 1, 1, 1}));
  return y;
}

torch::Tensor PointwiseConv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t b = x.size(0), cin = x.size(1), cout = weight.size(0);
  const int64_t d = x.size(2), h = x.size(3), w = x.size(4);
  auto w2 = weight.to(x.scalar_type()).view({cout, cin});
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  if (x.is_contiguous(cl)) {
    // Channels-last: the voxels are rows of a (B*DHW, Cin) matrix.
    auto out = torch::empty({b, cout, d, h, w}, x.options().memory_format(cl));
    onednn::MatmulOut(out.permute({0, 2, 3, 4, 1}).view({b * d * h * w, cout}),
                      x.permute({0, 2, 3, 4, 1}).view({b * d * h * w, cin}), w2.t(),
                      bias.defined() ? bias.to(x.scalar_type()) : bias);
    return out;
  }
  auto xc = x.contiguous();
  auto out = torch::empty({b, cout, d, h, w}, x.options());
  for (int64_t i = 0; i < b; ++i) {
    auto dst = out[i].view({cout, -1});
    onednn::MatmulOut(dst, w2, xc[i].view({cin, -1}));
    // oneDNN's fast kernels broadcast a bias along rows only.
    if (bias.defined()) dst.add_(bias.view({cout, 1}));
  }
  return out;
}

void ConvLayerImpl::SetComputeDtype(torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  packed_->Clear();  // the weights it ran with are replaced below (and by folding, ResBlock)
  if (dtype == weight_.scalar_type()) {
    compute_weight_ = torch::Tensor();
    compute_bias_ = torch::Tensor();
    return;
  }
  compute_weight_ = weight_.to(dtype);
  if (bias_.defined()) compute_bias_ = bias_.to(dtype);
}

torch::Tensor ConvLayerImpl::Conv(const torch::Tensor& x, const torch::Tensor& weight,
                                  const torch::Tensor& bias) const {
  const std::vector<int64_t> stride(stride_.begin(), stride_.end());
  const std::vector<int64_t> padding(padding_.begin(), padding_.end());
  if (x.is_cpu() && kernel_ == A3{1, 1, 1} && stride_ == A3{1, 1, 1}) {
    return PointwiseConv(x, weight, bias);
  }
  // On CPU, oneDNN directly, in channels-last (see onednn.h). The weight's
  // dtype is the compute dtype: bfloat16 weights run the convolution in
  // bfloat16 (AMX/AVX512-BF16) and still return float32, so norms and
  // attention stay in float32.
  if (x.is_cpu() && onednn::Available() && x.scalar_type() == torch::kFloat32) {
    return onednn::Conv3d(x, weight, bias, stride, padding, packed_.get());
  }
  if (weight.scalar_type() != x.scalar_type()) {
    return Conv(x.to(weight.scalar_type()), weight, bias).to(x.scalar_type());
  }
  return torch::conv3d(x, weight, bias, stride, padding);
}

// ---------------------------------------------------------------- ResBlock

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, Norm norm) : norm_(norm) {
  using K = ConvLayerImpl::Kind;
  conv1_ = register_module("conv1", ConvLayer(K::kConv, in, out, A3{3, 3, 3}, A3{1, 1, 1}, false));
  conv2_ = register_module("conv2", ConvLayer(K::kConv, out, out, A3{3, 3, 3}, A3{1, 1, 1}, false));
  if (norm == Norm::kBatch) {
    auto opts = torch::nn::BatchNorm3dOptions(out).eps(kNormEps);
    norm1_ = register_module("norm1", torch::nn::BatchNorm3d(opts));
    norm2_ = register_module("norm2", torch::nn::BatchNorm3d(opts));
  }
  if (in != out) {
    conv3_ = register_module("conv3", ConvLayer(K::kConv, in, out, A3{1, 1, 1}, A3{1, 1, 1}, false));
    if (norm == Norm::kBatch) {
      norm3_ = register_module("norm3", torch::nn::BatchNorm3d(torch::nn::BatchNorm3dOptions(out).eps(kNormEps)));
    }
  }
}

torch::Tensor ResBlockImpl::Normalize(const torch::Tensor& x, const torch::nn::BatchNorm3d& bn) {
  if (Differentiable(*this)) return norm_ == Norm::kInstance ? InstanceNorm(x, true) : bn.ptr()->forward(x);
  if (norm_ == Norm::kInstance) return InstanceNorm(x);
  return torch::batch_norm(x, bn->weight, bn->bias, bn->running_mean, bn->running_var,
                           /*training=*/false, /*momentum=*/0.1, kNormEps,
                           /*cudnn_enabled=*/true);
}

void ResBlockImpl::PrepareForInference(torch::ScalarType conv_dtype) {
  conv1_->SetComputeDtype(conv_dtype);
  conv2_->SetComputeDtype(conv_dtype);
  if (conv3_) conv3_->SetComputeDtype(conv_dtype);
  if (norm_ != Norm::kBatch) return;
  torch::NoGradGuard no_grad;
  // conv (no bias) then eval-mode BN == conv with weight * s and bias t, where
  // s = gamma / sqrt(var + eps) and t = beta - mean * s (per output channel).
  auto fold = [conv_dtype](const ConvLayer& conv, const torch::nn::BatchNorm3d& bn) {
    auto s = bn->weight.to(torch::kFloat32) / torch::sqrt(bn->running_var.to(torch::kFloat32) + kNormEps);
    auto t = bn->bias.to(torch::kFloat32) - bn->running_mean.to(torch::kFloat32) * s;
    auto w = conv->weight().to(torch::kFloat32) * s.view({-1, 1, 1, 1, 1});
    return std::make_pair(w.to(conv_dtype).contiguous(), t.to(conv_dtype));
  };
  std::tie(folded_w1_, folded_b1_) = fold(conv1_, norm1_);
  std::tie(folded_w2_, folded_b2_) = fold(conv2_, norm2_);
  if (conv3_) std::tie(folded_w3_, folded_b3_) = fold(conv3_, norm3_);
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x) {
  if (Differentiable(*this)) {
    auto out = torch::leaky_relu(Normalize(conv1_->forward(x), norm1_), kLeakySlope);
    out = Normalize(conv2_->forward(out), norm2_);
    const torch::Tensor residual = conv3_ ? Normalize(conv3_->forward(x), norm3_) : x;
    return torch::leaky_relu(out + residual, kLeakySlope);
  }
  if (folded_w1_.defined()) {
    auto out = conv1_->Conv(x, folded_w1_, folded_b1_);
    torch::leaky_relu_(out, kLeakySlope);
    out = conv2_->Conv(out, folded_w2_, folded_b2_);
    out.add_(conv3_ ? conv3_->Conv(x, folded_w3_, folded_b3_) : x);
    torch::leaky_relu_(out, kLeakySlope);
    return out;
  }
  auto out = Normalize(conv1_->forward(x), norm1_);
  torch::leaky_relu_(out, kLeakySlope);
  out = Normalize(conv2_->forward(out), norm2_);
  torch::Tensor residual = x;
  if (conv3_) residual = Normalize(conv3_->forward(x), norm3_);
  out.add_(residual);
  torch::leaky_relu_(out, kLeakySlope);
  return out;
}

// ---------------------------------------------------------------- EPA

EpaImpl::EpaImpl(const ModelConfig& config, int64_t tokens, int64_t channels, int64_t proj)
    : heads_(config.num_heads), projection_(config.projection), fusion_(config.fusion) {
  temperature_ = register_parameter("temperature", torch::ones({heads_, 1, 1}));
  temperature2_ = register_parameter("temperature2", torch::ones({heads_, 1, 1}));
  if (projection_ == Projection::kSharedMatrix) {
    // The reference initialises EF with U(-1/sqrt(P), 1/sqrt(P)).
    ef_ = RegisterUniform(*this, "EF", {tokens, proj}, proj);
  }
  qkvv_ = register_module("qkvv", torch::nn::Linear(torch::nn::LinearOptions(channels, 4 * channels).bias(false)));
  if (projection_ == Projection::kSharedLinear) {
    e_ = register_module("E", torch::nn::Linear(tokens, proj));
    f_ = e_;
    register_module("F", f_);  // the same module under a second name, as in the reference
  } else if (projection_ == Projection::kSeparateLinear) {
    e_ = register_module("E", torch::nn::Linear(tokens, proj));
    f_ = register_module("F", torch::nn::Linear(tokens, proj));
  }
  if (fusion_ == Fusion::kConcatProjected) {
    out_proj_ = register_module("out_proj", torch::nn::Linear(channels, channels / 2));
    out_proj2_ = register_module("out_proj2", torch::nn::Linear(channels, channels / 2));
  }
}

torch::Tensor EpaImpl::ProjectE(const torch::Tensor& t) {
  return projection_ == Projection::kSharedMatrix ? torch::matmul(t, ef_) : e_->forward(t);
}
torch::Tensor EpaImpl::ProjectF(const torch::Tensor& t) {
  return projection_ == Projection::kSharedMatrix ? torch::matmul(t, ef_) : f_->forward(t);
}

torch::Tensor EpaImpl::forward(const torch::Tensor& x) {
  if (!x.is_cpu() || Differentiable(*this)) return ForwardReference(x);
  RECORD_FUNCTION("upp::epa", std::vector<c10::IValue>());  // the whole attention block, in profiles
  std::vector<torch::Tensor> outs;
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
  // (B, N, 4C): columns q | k | v_CA | v_SA
  auto y = onednn::Matmul(x.contiguous().view({b * n, c}), qkvv_->weight.t()).view({b, n, 4 * c});
  for (int64_t b = 0; b < x.size(0); ++b) outs.push_back(ForwardOne(y[b]));
  return torch::stack(outs);
}

// The reference's formulation, op for op: used on GPUs, where its batched
// matmuls run well, and as the yardstick for ForwardOne in the tests.
torch::Tensor EpaImpl::ForwardReference(const torch::Tensor& x) {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2), d = c / heads_;
  // (B, N, 4, h, d) -> (4, B, h, d, N): q, k, v_CA, v_SA with tokens last.
  auto qkvv = qkvv_->forward(x).view({b, n, 4, heads_, d}).permute({2, 0, 3, 4, 1});
  auto q = qkvv[0], k = qkvv[1], v_ca = qkvv[2], v_sa = qkvv[3];

  // Spatial projections use the un-normalised keys and values.
  auto k_proj = ProjectE(k);     // (B, h, d, P)
  auto v_proj = ProjectF(v_sa);  // (B, h, d, P)

  namespace F = torch::nn::functional;
  q = F::normalize(q, F::NormalizeFuncOptions().dim(-1).eps(1e-12));
  k = F::normalize(k, F::NormalizeFuncOptions().dim(-1).eps(1e-12));

  // Channel attention: (B, h, d, d).
  auto attn_ca = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * temperature_, -1);
  // (B, h, d, N) -> (B, N, h, d) -> (B, N, C)
  auto x_ca = torch::matmul(attn_ca, v_ca).permute({0, 3, 1, 2}).reshape({b, n, c});

  // Spatial attention: (B, h, N, P).
  auto attn_sa = torch::softmax(torch::matmul(q.transpose(-2, -1), k_proj) * temperature2_, -1);
  // (B, h, N, d) -> (B, d, h, N) -> (B, N, C): the reference's reshape, which
  // does not merge heads the usual way; trained weights depend on it.
  auto x_sa = torch::matmul(attn_sa, v_proj.transpose(-2, -1)).permute({0, 3, 1, 2}).reshape({b, n, c});

  if (fusion_ == Fusion::kSum) return x_ca + x_sa;
  return torch::cat({out_proj_->forward(x_sa), out_proj2_->forward(x_ca)}, -1);
}

// The same function for one batch element, rearranged so that every product is
// one well-shaped GEMM on the (N, 4C) qkvv output and no (h, N, P) tensor is
// ever materialised (the reference writes and re-reads three of them, 32 MiB
// each at the synapse's first stage):
//  * L2 normalisation along tokens is a per-channel scale, so it is applied to
//    the small products instead of the (C, N) operands: q^T k / (|q| |k|).
//  * Channel attention for all heads is one (C x N)(N x C) product whose
//    diagonal d x d blocks are the heads' logits; the attention-weighted values
//    are V_CA (N x C) times the block-diagonal matrix of the heads' softmaxes.
//  * The spatial projections E/F are (C x N)(N x P) products; temperature2 and
//    1/|q| are folded into the projected keys, and the spatial softmax runs over
//    chunks of tokens that stay in cache, written straight into the layout of
//    the reference's (B, d, h, N) reshape.
torch::Tensor EpaImpl::ForwardOne(const torch::Tensor& y) {
  const int64_t n = y.size(0), c = y.size(1) / 4, h = heads_, d = c / h;
  auto yq = y.narrow(1, 0, c), yk = y.narrow(1, c, c);
  auto yv_ca = y.narrow(1, 2 * c, c), yv_sa = y.narrow(1, 3 * c, c);

  // One Gram matrix of the q|k columns gives both the channel-attention
  // logits (its q-k block) and the squared token-axis norms (its diagonal).
  auto yqk = y.narrow(1, 0, 2 * c);
  auto gram = onednn::Matmul(yqk.t(), yqk);              // (2C, 2C)
  auto norms = gram.diagonal().sqrt().clamp_min(1e-12);  // F.normalize: x / max(|x|, eps)
  auto q_norm = norms.narrow(0, 0, c), k_norm = norms.narrow(0, c, c);

  // Channel attention.
  auto g = gram.narrow(0, 0, c).narrow(1, c, c);  // q^T k, (C, C); head blocks on the diagonal
  auto blocks = torch::diagonal(g.reshape({h, d, h, d}), 0, 0, 2).permute({2, 0, 1});  // (h, d, d)
  blocks = blocks / (q_norm.view({h, d, 1}) * k_norm.view({h, 1, d})) * temperature_;
  auto attn_ca = torch::softmax(blocks, -1);                                    // (h, d, d)
  auto x_ca = onednn::Matmul(yv_ca, torch::block_diag(attn_ca.unbind(0)).t());  // (N, C)

  // Spatial attention.
  torch::Tensor k_proj, v_proj;  // (C, P)
  if (projection_ == Projection::kSharedMatrix) {
    k_proj = onednn::Matmul(yk.t(), ef_);
    v_proj = onednn::Matmul(yv_sa.t(), ef_);
  } else {
    k_proj = onednn::Matmul(yk.t(), e_->weight.t(), e_->bias);
    v_proj = onednn::Matmul(yv_sa.t(), f_->weight.t(), f_->bias);
  }
  auto scale = temperature2_.view({h, 1}).expand({h, d}).reshape({c}) / q_norm;  // (C)
  auto k_scaled = (k_proj * scale.view({c, 1})).contiguous();                    // (C, P)
  auto x_sa = torch::empty({d, h, n}, y.options());                              // the reference's (d, h, N) order
  constexpr int64_t kChunk = 4096;  // tokens; (kChunk x P) floats stay in L2
  // Heads run in parallel; inside the loop ATen and BLAS run single-threaded.
  at::parallel_for(0, h, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t hh = h0; hh < h1; ++hh) {
      auto k_h = k_scaled.narrow(0, hh * d, d);  // (d, P)
      auto v_h = v_proj.narrow(0, hh * d, d);    // (d, P)
      auto q_h = yq.narrow(1, hh * d, d);        // (N, d)
      auto out_h = x_sa.select(1, hh);           // (d, N), row stride h*N
      for (int64_t n0 = 0; n0 < n; n0 += kChunk) {
        const int64_t len = std::min(kChunk, n - n0);
        auto attn = onednn::Matmul(q_h.narrow(0, n0, len), k_h);  // (len, P) logits
        onednn::SoftmaxLastDimInPlace(attn);
        onednn::MatmulOut(out_h.narrow(1, n0, len), v_h, attn.t());  // (d, len)
      }
    }
  });
  auto x_sa_tokens = x_sa.view({n, c});  // the reshape of (d, h, N) to (N, C)

  if (fusion_ == Fusion::kSum) return x_ca + x_sa_tokens;
  auto out = torch::empty({n, c}, y.options());
  auto half = c / 2;
  auto out_sa = out.narrow(1, 0, half), out_ca = out.narrow(1, half, half);
  onednn::MatmulOut(out_sa, x_sa_tokens, out_proj_->weight.t(), out_proj_->bias);
  onednn::MatmulOut(out_ca, x_ca, out_proj2_->weight.t(), out_proj2_->bias);
  return out;
}

// ---------------------------------------------------------------- TransformerBlock

TransformerBlockImpl::TransformerBlockImpl(const ModelConfig& config, int64_t tokens, int64_t channels, int64_t proj) {
  // Registration order follows the reference so StateDict() matches its order:
  // own parameters (gamma, pos_embed) first, then norm, epa_block, conv51, conv52, conv8.
  gamma_ = register_parameter("gamma", torch::full({channels}, 1e-6));
  pos_embed_ = register_parameter("pos_embed", torch::zeros({1, tokens, channels}));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(kNormEps)));
  epa_ = register_module("epa_block", Epa(config, tokens, channels, proj));
  conv51_ = register_module("conv51", ResBlock(channels, channels, ResBlockImpl::Norm::kBatch));
  if (config.res_blocks_after_epa > 1) {
    conv52_ = register_module("conv52", ResBlock(channels, channels, ResBlockImpl::Norm::kBatch));
  }
  // conv8 = Sequential(Dropout3d, Conv3d 1x1x1): only the conv has weights.
  auto conv8 = register_module("conv8", std::make_shared<torch::nn::Module>("Sequential"));
  conv8_ = conv8->register_module("1", torch::nn::Conv3d(torch::nn::Conv3dOptions(channels, channels, 1)));
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), d = x.size(2), h = x.size(3), w = x.size(4);
  // (B, N, C) tokens; a view when x is channels-last.
  auto t = x.permute({0, 2, 3, 4, 1}).reshape({b, d * h * w, c}) + pos_embed_;
  auto attn = torch::addcmul(t, gamma_, epa_->forward(norm_->forward(t)));
  // (B, N, C) tokens are a channels-last (B, C, D, H, W) volume: no copy.
  auto skip = attn.view({b, d, h, w, c}).permute({0, 4, 1, 2, 3});
  auto y = conv51_->forward(skip);
  if (conv52_) y = conv52_->forward(y);
  // Dropout3d is the identity at inference (and left out in training).
  if (Differentiable(*this)) return conv8_->forward(y) + skip;
  auto out = y.is_cpu() ? PointwiseConv(y, conv8_->weight, conv8_->bias) : conv8_->forward(y);
  return out.add_(skip);
}

torch::Tensor RunBlocks(const torch::nn::ModuleList& blocks, torch::Tensor x) {
  for (const auto& m : *blocks) x = m->as<TransformerBlock>()->forward(x);
  return x;
}

// ---------------------------------------------------------------- Encoder

EncoderImpl::EncoderImpl(const ModelConfig& config) : config_(config) {
  using K = ConvLayerImpl::Kind;
  downsample_layers_ = register_module("downsample_layers", torch::nn::ModuleList());
  for (int i = 0; i < 4; ++i) {
    auto seq = std::make_shared<torch::nn::Module>("Sequential");
    const int64_t in = i == 0 ? config.in_channels : config.StageDim(i - 1);
    const auto k = i == 0 ? config.stem : std::array<int64_t, 3>{2, 2, 2};
    down_convs_.push_back(seq->register_module("0", ConvLayer(K::kConv, in, config.StageDim(i), k, k, false)));
    // Stem: GroupNorm with in_channels groups; downsampling i: dims[i-1] groups.
    down_norms_.push_back(seq->register_module(
        "1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(in, config.StageDim(i)).eps(kNormEps))));
    downsample_layers_->push_back(seq);
  }
  stages_ = register_module("stages", torch::nn::ModuleList());
  for (int s = 0; s < 4; ++s) {
    torch::nn::ModuleList blocks;
    for (int64_t j = 0; j < config.depths[s]; ++j) {
      blocks->push_back(TransformerBlock(config, config.StageTokens(s), config.StageDim(s), config.proj_sizes[s]));
    }
    stages_->push_back(blocks);
    stage_blocks_.push_back(blocks);
  }
}

std::vector<torch::Tensor> EncoderImpl::forward(const torch::Tensor& x) {
  std::vector<torch::Tensor> hidden;
  torch::Tensor h = x;
  for (int i = 0; i < 4; ++i) {
    const auto& gn = down_norms_[i];
    h = torch::group_norm(down_convs_[i]->forward(h).contiguous(), gn->options.num_groups(), gn->weight, gn->bias,
                          kNormEps);
    h = RunBlocks(stage_blocks_[i], h);
    hidden.push_back(h);
  }
  return hidden;
}

// ---------------------------------------------------------------- UpBlock

UpBlockImpl::UpBlockImpl(const ModelConfig& config, int64_t in, int64_t out, std::array<int64_t, 3> up, int64_t tokens,
                         bool conv_decoder) {
  transp_conv_ = register_module("transp_conv", ConvLayer(ConvLayerImpl::Kind::kTransposed, in, out, up, up, false));
  decoder_block_ = register_module("decoder_block", torch::nn::ModuleList());
  if (conv_decoder) {
    res_block_ = ResBlock(out, out, ResBlockImpl::Norm::kInstance);
    decoder_block_->push_back(res_block_);
  } else {
    epa_blocks_ = torch::nn::ModuleList();
    for (int64_t j = 0; j < config.decoder_depth; ++j) {
      epa_blocks_->push_back(TransformerBlock(config, tokens, out, config.decoder_proj_size));
    }
    decoder_block_->push_back(epa_blocks_);
  }
}

torch::Tensor UpBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& skip) {
  auto out = transp_conv_->TransposedAdd(x, skip);
  if (res_block_) return res_block_->forward(out);
  return RunBlocks(epa_blocks_, out);
}

// ---------------------------------------------------------------- OutBlock

OutBlockImpl::OutBlockImpl(int64_t in, int64_t classes) {
  // UnetOutBlock.conv is a MONAI Convolution whose child "conv" is the Conv3d.
  conv_ = register_module("conv", ConvLayer(ConvLayerImpl::Kind::kConv, in, classes, A3{1, 1, 1}, A3{1, 1, 1}, true));
}

// ---------------------------------------------------------------- UnetrPP

UnetrPPImpl::UnetrPPImpl(const ModelConfig& config) : config_(config) {
  const int64_t f = config.feature_size;
  encoder_ = register_module("unetr_pp_encoder", Encoder(config));
  encoder1_ = register_module("encoder1", ResBlock(config.in_channels, f, ResBlockImpl::Norm::kInstance));
  const std::array<int64_t, 3> two{2, 2, 2};
  decoder5_ = register_module("decoder5", UpBlock(config, 16 * f, 8 * f, two, config.StageTokens(2), false));
  decoder4_ = register_module("decoder4", UpBlock(config, 8 * f, 4 * f, two, config.StageTokens(1), false));
  decoder3_ = register_module("decoder3", UpBlock(config, 4 * f, 2 * f, two, config.StageTokens(0), false));
  decoder2_ = register_module("decoder2", UpBlock(config, 2 * f, f, config.stem, 0, true));
  out1_ = register_module("out1", OutBlock(f, config.num_classes));
  out2_ = register_module("out2", OutBlock(2 * f, config.num_classes));
  out3_ = register_module("out3", OutBlock(4 * f, config.num_classes));
}

std::vector<torch::Tensor> UnetrPPImpl::forward(const torch::Tensor& x, bool deep_supervision) {
  auto hidden = encoder_->forward(x);
  auto conv_block = encoder1_->forward(x);
  auto dec3 = decoder5_->forward(hidden[3], hidden[2]);
  auto dec2 = decoder4_->forward(dec3, hidden[1]);
  auto dec1 = decoder3_->forward(dec2, hidden[0]);
  auto out = decoder2_->forward(dec1, conv_block);
  if (!deep_supervision) return {out1_->forward(out)};
  return {out1_->forward(out), out2_->forward(dec1), out3_->forward(dec2)};
}

void UnetrPPImpl::PrepareForInference(torch::ScalarType conv_dtype) {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* rb = m->as<ResBlockImpl>()) rb->PrepareForInference(conv_dtype);
  }
  for (auto& conv : encoder_->down_convs()) conv->SetComputeDtype(conv_dtype);
}

// ---------------------------------------------------------------- state dict

namespace {
void CollectStateDict(const torch::nn::Module& m, const std::string& prefix,
                      std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : m.named_buffers(/*recurse=*/false)) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& c : m.named_children()) CollectStateDict(*c.value(), prefix + c.key() + ".", out);
}
}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> StateDict(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  CollectStateDict(module, "", out);
  return out;
}

int64_t CountTrainableParameters(const torch::nn::Module& module) {
  std::unordered_set<const void*> seen;
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) {
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) n += p.numel();
  }
  return n;
}

}  // namespace upp::model
