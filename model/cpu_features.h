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
  std::string bf16_error;          // why not, when it failed
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
// BENCHMARKS.md), else "fp32".
std::string DefaultPrecision(const std::vector<std::string>& devices, const CpuFeatures& f);

}  // namespace upp::model

#endif  // UPP_MODEL_CPU_FEATURES_H_
