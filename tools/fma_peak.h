// The CPU's fp32 peak as this machine delivers it: a loop of independent
// fused multiply-adds on every thread asked for, at the widest vector width
// the CPU runs (AVX-512, else AVX2 + FMA). upp-bench-model divides a
// window's effective GFLOP/s by it, so that the distance to the hardware's
// limit is a number rather than a guess. Measured, not computed from clock
// and port counts: a VM's clock, turbo under load and the FMA units per core
// (one or two on AVX-512 parts) are what the loop finds.
#ifndef UPP_TOOLS_FMA_PEAK_H_
#define UPP_TOOLS_FMA_PEAK_H_

#include <string>

namespace upp::tools {

struct FmaPeak {
  double gflops = 0;  // fp32, all threads together
  std::string isa;    // "avx512", "avx2", or "none" (then gflops is 0)
};

// Runs the loop on `threads` threads for about `seconds`.
FmaPeak MeasureFp32Peak(int threads, double seconds = 0.5);

}  // namespace upp::tools

#endif  // UPP_TOOLS_FMA_PEAK_H_
