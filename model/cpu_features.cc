#include "model/cpu_features.h"

#include <torch/torch.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstring>

#include "model/onednn.h"

#ifdef UPP_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace upp::model {
namespace {

#ifdef UPP_HAVE_ONEDNN
// oneDNN's ISA values are cumulative bit sets (each level includes the bits
// of those below it), so "has at least X" is a mask test.
bool AtLeast(dnnl_cpu_isa_t isa, dnnl_cpu_isa_t level) {
  return (static_cast<unsigned>(isa) & static_cast<unsigned>(level)) == static_cast<unsigned>(level);
}

void QueryIsa(CpuFeatures& f) {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  f.avx512 = AtLeast(isa, dnnl_cpu_isa_avx512_core);
  f.avx512_bf16 = AtLeast(isa, dnnl_cpu_isa_avx512_core_bf16);
  f.amx = AtLeast(isa, dnnl_cpu_isa_avx512_core_amx);
  if (f.amx) {
    f.isa = "avx512_core_amx";
  } else if (f.avx512_bf16) {
    f.isa = "avx512_core_bf16";
  } else if (AtLeast(isa, dnnl_cpu_isa_avx512_core_vnni)) {
    f.isa = "avx512_core_vnni";
  } else if (f.avx512) {
    f.isa = "avx512_core";
  } else if (AtLeast(isa, dnnl_cpu_isa_avx2)) {
    f.isa = "avx2";
  } else if (AtLeast(isa, dnnl_cpu_isa_avx)) {
    f.isa = "avx";
  } else {
    f.isa = "sse41 or older";
  }
}
#else
void QueryIsa(CpuFeatures& f) { f.isa = "unknown (built without oneDNN)"; }
#endif

// Vendor and display family from CPUID leaves 0 and 1 (the compiler's
// <cpuid.h>; neither oneDNN nor LibTorch tells which core it runs on).
void QueryVendor(CpuFeatures& f) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return;
  const int base = static_cast<int>((a >> 8) & 0xF);
  f.family = base == 0xF ? base + static_cast<int>((a >> 20) & 0xFF) : base;
#else
  (void)f;
#endif
}

// Runs the two convolution shapes the network uses in bfloat16 (3x3x3 with
// bias, 2x2x2 stride 2 without) through the same code path as the network.
void ProbeBf16(CpuFeatures& f) {
  try {
    torch::NoGradGuard no_grad;
    const auto x = torch::rand({1, 8, 6, 6, 6}).contiguous(at::MemoryFormat::ChannelsLast3d);
    const auto w3 = torch::rand({8, 8, 3, 3, 3}).to(torch::kBFloat16);
    const auto w2 = torch::rand({8, 8, 2, 2, 2}).to(torch::kBFloat16);
    const auto bias = torch::rand({8});
    torch::Tensor a, b;
    if (onednn::Available()) {
      a = onednn::Conv3d(x, w3, bias, {1, 1, 1}, {1, 1, 1});
      b = onednn::Conv3d(x, w2, {}, {2, 2, 2}, {0, 0, 0});
    } else {
      const auto xb = x.to(torch::kBFloat16);
      a = torch::conv3d(xb, w3, bias.to(torch::kBFloat16), {1, 1, 1}, {1, 1, 1});
      b = torch::conv3d(xb, w2, {}, {2, 2, 2});
    }
    f.bf16_convolutions = a.isfinite().all().item<bool>() && b.isfinite().all().item<bool>();
    if (!f.bf16_convolutions) f.bf16_error = "the probe convolution gave non-finite values";
  } catch (const std::exception& e) {
    f.bf16_convolutions = false;
    f.bf16_error = e.what();
    // c10 errors carry a backtrace after the first line.
    if (auto nl = f.bf16_error.find('\n'); nl != std::string::npos) f.bf16_error.resize(nl);
  }
}

// Why bfloat16 is missing, in the terms of the instruction sets: oneDNN's
// own reason ("could not create a primitive descriptor") is kept only when
// the CPU has what bfloat16 needs and the probe still failed.
std::string Bf16Missing(const CpuFeatures& f) {
  if (!f.avx512)
    return "this CPU's best instruction set is " + f.isa + "; bfloat16 needs AVX-512 (natively AVX512-BF16 or AMX)";
  return "oneDNN ISA " + f.isa + ": " + f.bf16_error;
}

}  // namespace

const CpuFeatures& DetectCpuFeatures() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    QueryIsa(f);
    QueryVendor(f);
    ProbeBf16(f);
    return f;
  }();
  return features;
}

std::string DescribeCpuFeatures(const CpuFeatures& f) {
  std::string s =
      "cpu: " + (f.vendor.empty() ? std::string() : f.vendor + " family " + std::to_string(f.family) + ", ") + "isa " +
      f.isa + ", bfloat16 convolutions: ";
  if (!f.bf16_convolutions) return s + "no (" + Bf16Missing(f) + ")";
  if (f.amx) return s + "yes (AMX)";
  if (f.avx512_bf16) return s + "yes (AVX512-BF16)";
  return s + "yes (emulated on AVX-512, slower than float32)";
}

Status CheckPrecisionSupported(const std::string& device, const std::string& precision) {
  if (precision != "bf16" || device.rfind("cpu", 0) != 0) return OkStatus();
  const CpuFeatures& f = DetectCpuFeatures();
  if (f.bf16_convolutions) return OkStatus();
  return FailedPreconditionError("precision \"bf16\" needs bfloat16 convolutions, which this CPU cannot run (" +
                                 Bf16Missing(f) + "); use precision \"fp32\" on this machine");
}

std::string DefaultPrecision(const std::vector<std::string>& devices, const CpuFeatures& f) {
  for (const auto& d : devices)
    if (d.rfind("cpu", 0) != 0) return "fp32";
  if (!f.bf16_convolutions) return "fp32";
  const bool zen5 = f.vendor == "AuthenticAMD" && f.family >= kAmdZen5Family && f.avx512_bf16;
  return f.amx || zen5 ? "bf16" : "fp32";
}

}  // namespace upp::model
