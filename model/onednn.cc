#include "model/onednn.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <mutex>
#include <vector>

#ifdef UPP_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace upp::model::onednn {

namespace {
void AtenMatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
                   const torch::Tensor& bias) {
  auto o = out;
  if (bias.defined()) {
    torch::addmm_out(o, bias.dim() == 1 ? bias.view({1, -1}) : bias, a, b);
  } else {
    torch::mm_out(o, a, b);
  }
}
}  // namespace

#ifdef UPP_HAVE_ONEDNN
namespace {

const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::memory::data_type DataType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return dnnl::memory::data_type::f32;
    case torch::kBFloat16: return dnnl::memory::data_type::bf16;
    default: TORCH_CHECK(false, "oneDNN path: unsupported dtype ", t.scalar_type());
  }
}

dnnl::memory::desc Desc(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, "oneDNN path: expected a 2-D tensor");
  // Strides of size-1 dimensions are arbitrary in torch; give oneDNN
  // canonical ones so it recognises the layout.
  int64_t s0 = t.stride(0), s1 = t.stride(1);
  if (t.size(1) == 1) s1 = 1;
  if (t.size(0) == 1) s0 = t.size(1) * s1;
  if (t.size(0) == 1 && t.size(1) == 1) s0 = s1 = 1;
  return dnnl::memory::desc({t.size(0), t.size(1)}, DataType(t), {s0, s1});
}

dnnl::memory Memory(const torch::Tensor& t) { return dnnl::memory(Desc(t), Engine(), t.data_ptr()); }

// A descriptor with the tensor's own dims and strides. Channels-last 5-D
// tensors get the ndhwc tag instead of their strides: with a size-1 channel
// dimension the strides are ambiguous and oneDNN would not recognise the
// layout (and fall back to its reference kernels).
dnnl::memory::desc StridedDesc(const torch::Tensor& t, dnnl::memory::data_type dt) {
  if (t.dim() == 5 && t.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    return dnnl::memory::desc(t.sizes().vec(), dt, dnnl::memory::format_tag::ndhwc);
  }
  if (t.dim() == 5 && t.is_contiguous()) {
    return dnnl::memory::desc(t.sizes().vec(), dt, dnnl::memory::format_tag::abcde);
  }
  return dnnl::memory::desc(t.sizes().vec(), dt, t.strides().vec());
}

}  // namespace

bool Available() { return true; }

struct PackedWeights::Impl {
  struct Entry {
    // Held, so that its storage cannot be freed and reused by another
    // tensor that would then match by address.
    torch::Tensor weight;
    int64_t version;
    dnnl::memory::desc desc;
    dnnl::memory packed;
  };
  static constexpr size_t kMaxEntries = 4;
  std::mutex mu;
  std::vector<Entry> entries;  // most recently made last

  // `user` (the weights as stored) in layout `desc`: the kept copy when
  // `weight` is still the tensor it was made from, else a new one, kept.
  dnnl::memory Get(const torch::Tensor& weight, dnnl::memory user, const dnnl::memory::desc& desc,
                   dnnl::stream& stream) {
    // In-place changes of the weights (loading) bump the version counter;
    // inference tensors have none, and cannot be changed in place outside
    // inference mode either.
    const int64_t version = weight.is_inference() ? 0 : weight._version();
    std::lock_guard<std::mutex> lock(mu);
    for (const Entry& e : entries)
      if (e.weight.is_same(weight) && e.version == version && e.desc == desc) return e.packed;
    dnnl::memory packed(desc, Engine());
    dnnl::reorder(user, packed).execute(stream, user, packed);
    if (entries.size() == kMaxEntries) entries.erase(entries.begin());
    entries.push_back({weight, version, desc, packed});
    return packed;
  }
};

void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  if (!a.is_cpu()) return AtenMatmulOut(out, a, b, bias);
  RECORD_FUNCTION("upp::onednn_matmul", std::vector<c10::IValue>());  // named in profiles (tools/profile_model.py)
  TORCH_CHECK(a.size(1) == b.size(0) && out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "oneDNN matmul: shape mismatch");
  // oneDNN keeps its own cache of compiled primitives keyed by these
  // descriptors, so re-creating the primitive per call costs a lookup.
  dnnl::primitive_attr attr;
  torch::Tensor bias2;
  if (bias.defined()) {
    bias2 = bias.dim() == 1 ? bias.view({1, bias.size(0)}) : bias;
    if (bias2.scalar_type() != out.scalar_type()) bias2 = bias2.to(out.scalar_type());
  }
  auto pd =
      bias2.defined()
          ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(Desc(a), Desc(b), Desc(bias2), Desc(out)), attr, Engine())
          : dnnl::matmul::primitive_desc(dnnl::matmul::desc(Desc(a), Desc(b), Desc(out)), attr, Engine());
  dnnl::stream stream(Engine());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, Memory(a)}, {DNNL_ARG_WEIGHTS, Memory(b)}, {DNNL_ARG_DST, Memory(out)}};
  if (bias2.defined()) args.emplace(DNNL_ARG_BIAS, Memory(bias2));
  dnnl::matmul(pd).execute(stream, args);
  stream.wait();
}

torch::Tensor Conv3d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     c10::IntArrayRef stride, c10::IntArrayRef padding, PackedWeights* packed) {
  TORCH_CHECK(x.dim() == 5 && weight.dim() == 5 && x.scalar_type() == torch::kFloat32,
              "oneDNN conv: expected float32 5-D input");
  RECORD_FUNCTION("upp::onednn_conv3d", std::vector<c10::IValue>());
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  const auto cdt = DataType(weight);
  dnnl::stream stream(Engine());
  // Source in channels-last and the compute dtype (one reorder if needed).
  torch::Tensor src = x;
  if (weight.scalar_type() != torch::kFloat32 || !x.is_contiguous(cl)) {
    src = torch::empty(x.sizes(), x.options().dtype(weight.scalar_type()).memory_format(cl));
    dnnl::memory from(StridedDesc(x, dnnl::memory::data_type::f32), Engine(), x.data_ptr());
    dnnl::memory to(StridedDesc(src, cdt), Engine(), src.data_ptr());
    dnnl::reorder(from, to).execute(stream, from, to);
  }
  std::vector<int64_t> out_sizes{x.size(0), weight.size(0)};
  for (int i = 0; i < 3; ++i) {
    out_sizes.push_back((x.size(2 + i) + 2 * padding[i] - weight.size(2 + i)) / stride[i] + 1);
  }
  auto out = torch::empty(out_sizes, x.options().memory_format(cl));
  auto src_md = StridedDesc(src, cdt);
  auto dst_md = StridedDesc(out, dnnl::memory::data_type::f32);
  auto wei_any = dnnl::memory::desc(weight.sizes().vec(), cdt, dnnl::memory::format_tag::any);
  const dnnl::memory::dims strides(stride.begin(), stride.end());
  const dnnl::memory::dims pads(padding.begin(), padding.end());
  torch::Tensor bias_f;
  dnnl::memory::desc bias_md;
  if (bias.defined()) {
    bias_f = bias.to(torch::kFloat32).contiguous();
    bias_md = dnnl::memory::desc({bias_f.size(0)}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
  }
  auto desc =
      bias.defined()
          ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src_md, wei_any, bias_md, dst_md, strides, pads, pads)
          : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src_md, wei_any, dst_md, strides, pads, pads);
  dnnl::convolution_forward::primitive_desc pd(desc, Engine());
  auto wc = weight.contiguous();
  dnnl::memory user_w(StridedDesc(wc, cdt), Engine(), wc.data_ptr());
  dnnl::memory conv_w = user_w;
  if (pd.weights_desc() != user_w.get_desc()) {
    if (packed) {
      conv_w = packed->impl_->Get(wc, user_w, pd.weights_desc(), stream);
    } else {
      conv_w = dnnl::memory(pd.weights_desc(), Engine());
      dnnl::reorder(user_w, conv_w).execute(stream, user_w, conv_w);
    }
  }
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(src_md, Engine(), src.data_ptr())},
                                             {DNNL_ARG_WEIGHTS, conv_w},
                                             {DNNL_ARG_DST, dnnl::memory(dst_md, Engine(), out.data_ptr())}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, Engine(), bias_f.data_ptr()));
  dnnl::convolution_forward(pd).execute(stream, args);
  stream.wait();
  return out;
}

namespace {

// Per-channel sums and sums of squares of voxels [v0, v1) of channels-last
// data with `c` channels, added to sum[c] and sq[c]. Vectorised over channels
// (16 floats per instruction with AVX-512, where a double accumulator per
// element took 4 and the statistics were most of the normalisation's time):
// in float within blocks of 256 voxels, in double across blocks. The values
// are taken relative to the range's first voxel (a pivot near the mean), so
// the float sums of squares hold the spread itself, not mean^2 + spread,
// which one-pass float statistics lose when the mean is large against the
// spread; the raw sums are rebuilt in double at the end. Compiled for
// AVX-512, AVX2 and the baseline (the build targets plain x86-64) and chosen
// on first use (ChannelSums below); not with target_clones, whose load-time
// resolver crashes under the sanitizers (deploy/tsan.sh).
__attribute__((always_inline)) inline void ChannelSumsBody(const float* data, int64_t v0, int64_t v1, int64_t c,
                                                           double* sum, double* sq) {
  if (v1 <= v0) return;
  constexpr int64_t kBlock = 256;
  std::vector<float> pivot_v(data + v0 * c, data + (v0 + 1) * c), block_sum(static_cast<size_t>(c)),
      block_sq(static_cast<size_t>(c));
  std::vector<double> s1(static_cast<size_t>(c), 0.0), s2(static_cast<size_t>(c), 0.0);
  const float* __restrict pivot = pivot_v.data();
  float* __restrict bs = block_sum.data();
  float* __restrict bq = block_sq.data();
  for (int64_t b0 = v0; b0 < v1; b0 += kBlock) {
    std::fill(bs, bs + c, 0.0f);
    std::fill(bq, bq + c, 0.0f);
    for (int64_t v = b0, b1 = std::min(v1, b0 + kBlock); v < b1; ++v) {
      const float* __restrict row = data + v * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float d = row[ch] - pivot[ch];
        bs[ch] += d;
        bq[ch] += d * d;
      }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      s1[ch] += bs[ch];
      s2[ch] += bq[ch];
    }
  }
  // sum x = S1 + n p; sum x^2 = S2 + 2 p S1 + n p^2.
  const double n = static_cast<double>(v1 - v0);
  for (int64_t ch = 0; ch < c; ++ch) {
    const double p = pivot[ch];
    sum[ch] += s1[ch] + n * p;
    sq[ch] += s2[ch] + 2 * p * s1[ch] + n * p * p;
  }
}

using ChannelSumsFn = void (*)(const float*, int64_t, int64_t, int64_t, double*, double*);

__attribute__((target("avx512f"))) void ChannelSumsAvx512(const float* data, int64_t v0, int64_t v1, int64_t c,
                                                          double* sum, double* sq) {
  ChannelSumsBody(data, v0, v1, c, sum, sq);
}
__attribute__((target("avx2,fma"))) void ChannelSumsAvx2(const float* data, int64_t v0, int64_t v1, int64_t c,
                                                         double* sum, double* sq) {
  ChannelSumsBody(data, v0, v1, c, sum, sq);
}
void ChannelSumsBaseline(const float* data, int64_t v0, int64_t v1, int64_t c, double* sum, double* sq) {
  ChannelSumsBody(data, v0, v1, c, sum, sq);
}

void ChannelSums(const float* data, int64_t v0, int64_t v1, int64_t c, double* sum, double* sq) {
  static const ChannelSumsFn fn = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f")) return &ChannelSumsAvx512;
    if (avx2) return &ChannelSumsAvx2;
    return &ChannelSumsBaseline;
  }();
  fn(data, v0, v1, c, sum, sq);
}

}  // namespace

torch::Tensor InstanceNorm(const torch::Tensor& x, double eps) {
  TORCH_CHECK(x.dim() == 5 && x.scalar_type() == torch::kFloat32 && x.is_cpu(),
              "instance norm: expected a float32 5-D CPU tensor");
  RECORD_FUNCTION("upp::onednn_instance_norm", std::vector<c10::IValue>());
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  if (!x.is_contiguous(cl)) return torch::group_norm(x.contiguous(), x.size(1), {}, {}, eps);
  const int64_t b = x.size(0), c = x.size(1), voxels = x.numel() / (b * c);
  auto out = torch::empty_like(x, cl);
  dnnl::stream stream(Engine());
  for (int64_t i = 0; i < b; ++i) {
    // Statistics in one pass, ChannelSums below; oneDNN's batch-norm
    // statistics and ATen's channels-last group_norm both accumulate in float
    // over the whole volume and lose about three digits over a million voxels,
    // which shows in the logits.
    const float* data = x.data_ptr<float>() + i * voxels * c;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), voxels / 4096));
    std::vector<double> partial(static_cast<size_t>(chunks * 2 * c), 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        ChannelSums(data, voxels * k / chunks, voxels * (k + 1) / chunks, c, &partial[k * 2 * c],
                    &partial[k * 2 * c + c]);
      }
    });
    auto mean = torch::empty({c}, x.options()), var = torch::empty({c}, x.options());
    float* mean_p = mean.data_ptr<float>();
    float* var_p = var.data_ptr<float>();
    for (int64_t ch = 0; ch < c; ++ch) {
      double s = 0, q = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        s += partial[k * 2 * c + ch];
        q += partial[k * 2 * c + c + ch];
      }
      const double m = s / voxels;
      mean_p[ch] = static_cast<float>(m);
      var_p[ch] = static_cast<float>(std::max(0.0, q / voxels - m * m));
    }
    // Normalisation with the given statistics: oneDNN batch norm in
    // global-stats mode, one vectorised pass in channels-last.
    auto s = x.narrow(0, i, 1), d = out.narrow(0, i, 1);
    auto md = StridedDesc(s, dnnl::memory::data_type::f32);
    dnnl::batch_normalization_forward::primitive_desc pd(
        dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, static_cast<float>(eps),
                                                dnnl::normalization_flags::use_global_stats),
        Engine());
    dnnl::batch_normalization_forward(pd).execute(
        stream, {{DNNL_ARG_SRC, dnnl::memory(md, Engine(), s.data_ptr())},
                 {DNNL_ARG_DST, dnnl::memory(md, Engine(), d.data_ptr())},
                 {DNNL_ARG_MEAN, dnnl::memory(pd.mean_desc(), Engine(), mean.data_ptr())},
                 {DNNL_ARG_VARIANCE, dnnl::memory(pd.variance_desc(), Engine(), var.data_ptr())}});
  }
  stream.wait();
  return out;
}

void SoftmaxLastDimInPlace(const torch::Tensor& x) {
  if (!x.is_cpu()) {
    x.copy_(torch::softmax(x, -1));
    return;
  }
  RECORD_FUNCTION("upp::onednn_softmax", std::vector<c10::IValue>());
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == torch::kFloat32, "oneDNN softmax: bad input");
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  auto t = x.view({rows, cols});
  auto md = Desc(t);
  auto pd = dnnl::softmax_forward::primitive_desc(
      dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1), Engine());
  auto mem = Memory(t);
  dnnl::stream stream(Engine());
  dnnl::softmax_forward(pd).execute(stream, {{DNNL_ARG_SRC, mem}, {DNNL_ARG_DST, mem}});
  stream.wait();
}

#else  // no oneDNN

bool Available() { return false; }

struct PackedWeights::Impl {};  // ATen's convolution packs nothing here

void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  AtenMatmulOut(out, a, b, bias);
}

torch::Tensor Conv3d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     c10::IntArrayRef stride, c10::IntArrayRef padding, PackedWeights*) {
  return torch::conv3d(x.to(weight.scalar_type()), weight, bias, stride, padding).to(x.scalar_type());
}

torch::Tensor InstanceNorm(const torch::Tensor& x, double eps) {
  return torch::group_norm(x.contiguous(), x.size(1), {}, {}, eps);
}

void SoftmaxLastDimInPlace(const torch::Tensor& x) { x.copy_(torch::softmax(x, -1)); }

#endif

PackedWeights::PackedWeights() : impl_(std::make_unique<Impl>()) {}
PackedWeights::~PackedWeights() = default;

void PackedWeights::Clear() {
#ifdef UPP_HAVE_ONEDNN
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->entries.clear();
#endif
}

int64_t PackedWeights::size() const {
#ifdef UPP_HAVE_ONEDNN
  std::lock_guard<std::mutex> lock(impl_->mu);
  return static_cast<int64_t>(impl_->entries.size());
#else
  return 0;
#endif
}

torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  MatmulOut(out, a, b, bias);
  return out;
}

}  // namespace upp::model::onednn
