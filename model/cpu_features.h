// What this machine's CPU can run, found once per process: the instruction
// set oneDNN (the library behind LibTorch's CPU convolutions) dispatches to,
// and whether the bfloat16 convolutions of Precision::kBFloat16 run at all.
//
// Why a probe and not only the ISA: oneDNN's bfloat16 convolutions need
// AVX-512 (native with AVX512-BF16 or AMX, emulated on plain AVX-512 cores);
// on an AVX2-only CPU creating the primitive fails with "could not create a
// primitive descriptor iterator". Which ISA suffices differs between oneDNN
// versions, so the answer is whether a small bfloat16 convolution of the
// kind the network runs can be created and executed here.
//
// oneDNN honours ONEDNN_MAX_CPU_ISA (e.g. "AVX2"): the tests use it to run the
// AVX2 behaviour on a machine that has more.
//
// Torch-free header: the server includes it. Thread-safe (computed once, under
// a function-local static).
#ifndef UPP_MODEL_CPU_FEATURES_H_
#define UPP_MODEL_CPU_FEATURES_H_

#include <string>
#include <vector>

#include "model/status.h"

namespace upp::model {

struct CpuFeatures {
  // oneDNN's effective ISA, lower case ("avx2", "avx512_core_bf16",
  // "avx512_core_amx", ...); "unknown" in a build without oneDNN.
  std::string isa;
  bool avx512 = false;             // AVX-512 (avx512_core) kernels available
  bool avx512_bf16 = false;        // native bfloat16 dot products
  bool amx = false;                // AMX tiles (bfloat16 at several times AVX-512's rate)
  bool bf16_convolutions = false;  // the probe above succeeded
  // CPUID's vendor ("GenuineIntel", "AuthenticAMD"; empty off x86) and
  // display family (6 for Intel's Xeons, 25 for AMD Zen 3/4, 26 for Zen 5):
  // bfloat16's worth without AMX depends on the core, not on the ISA alone.
  std::string vendor;
  int family = 0;
  std::string bf16_error;  // why not, when it failed
};

// Detected on the first call (a few milliseconds), then cached.
const CpuFeatures& DetectCpuFeatures();

// One line for the start-up log: "cpu: isa avx2, bfloat16 convolutions: no (...)".
std::string DescribeCpuFeatures(const CpuFeatures& f);

// OK when `precision` ("fp32" or "bf16") can run on `device` ("cpu", "cuda:N").
// bf16 on a CPU without bfloat16 convolutions: FAILED_PRECONDITION naming the
// ISA found, what is missing, and the alternative (precision "fp32").
Status CheckPrecisionSupported(const std::string& device, const std::string& precision);

// The precision a model gets when its configuration names none: "bf16" when
// every device is the CPU and the CPU has AMX (where bfloat16 convolutions
// run several times faster, and 20 unseen phantoms through the whole
// pipeline gave the same Dice to 1e-4 and 99.99 % of the labels of fp32:
// BENCHMARKS.md), or is an AMD Zen 5 or later with AVX512-BF16 (a synapse
// window 4-23 % faster in bf16 there); else "fp32". Not on Intel's AVX512-BF16
// without AMX (1.5x slower than fp32 on a Xeon, family 6 model 207) nor on
// Zen 4 (not measured).
std::string DefaultPrecision(const std::vector<std::string>& devices, const CpuFeatures& f);

// AMD's family of Zen 5, the first where bfloat16 without AMX was measured
// faster than float32.
inline constexpr int kAmdZen5Family = 0x1A;

}  // namespace upp::model

#endif  // UPP_MODEL_CPU_FEATURES_H_
