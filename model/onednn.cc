#include "model/onednn.h"

#ifdef UPP_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace upp::model::onednn {

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
  return dnnl::memory::desc({t.size(0), t.size(1)}, DataType(t), {t.stride(0), t.stride(1)});
}

dnnl::memory Memory(const torch::Tensor& t) {
  return dnnl::memory(Desc(t), Engine(), t.data_ptr());
}

}  // namespace

bool Available() { return true; }

void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
               const torch::Tensor& bias) {
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
  auto pd = bias2.defined()
                ? dnnl::matmul::primitive_desc(
                      dnnl::matmul::desc(Desc(a), Desc(b), Desc(bias2), Desc(out)), attr, Engine())
                : dnnl::matmul::primitive_desc(dnnl::matmul::desc(Desc(a), Desc(b), Desc(out)),
                                               attr, Engine());
  dnnl::stream stream(Engine());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, Memory(a)}, {DNNL_ARG_WEIGHTS, Memory(b)}, {DNNL_ARG_DST, Memory(out)}};
  if (bias2.defined()) args.emplace(DNNL_ARG_BIAS, Memory(bias2));
  dnnl::matmul(pd).execute(stream, args);
  stream.wait();
}

void SoftmaxLastDimInPlace(const torch::Tensor& x) {
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

void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
               const torch::Tensor& bias) {
  auto o = out;
  if (bias.defined()) {
    torch::addmm_out(o, bias.dim() == 1 ? bias.view({1, -1}) : bias, a, b);
  } else {
    torch::mm_out(o, a, b);
  }
}

void SoftmaxLastDimInPlace(const torch::Tensor& x) { x.copy_(torch::softmax(x, -1)); }

#endif

torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  auto out = torch::empty({a.size(0), b.size(1)}, a.options());
  MatmulOut(out, a, b, bias);
  return out;
}

}  // namespace upp::model::onednn
