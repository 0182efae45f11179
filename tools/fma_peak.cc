#include "tools/fma_peak.h"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace upp::tools {
namespace {

// Twelve independent accumulators: more than the FMA latency (4 cycles)
// times the FMA ports (2), so that the loop is bound by throughput.
constexpr int kChains = 12;
constexpr int64_t kRounds = 1 << 16;  // FMAs per chain between clock reads

__attribute__((target("avx512f"))) float Avx512Rounds(int64_t rounds) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  return lanes[0] + lanes[15];  // used, so the loop is not removed
}

__attribute__((target("avx2,fma"))) float Avx2Rounds(int64_t rounds) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t r = 0; r < rounds; ++r)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  return lanes[0] + lanes[7];
}

}  // namespace

FmaPeak MeasureFp32Peak(int threads, double seconds) {
  FmaPeak peak;
  int lanes = 0;
  float (*rounds_fn)(int64_t) = nullptr;
  if (__builtin_cpu_supports("avx512f")) {
    peak.isa = "avx512", lanes = 16, rounds_fn = Avx512Rounds;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    peak.isa = "avx2", lanes = 8, rounds_fn = Avx2Rounds;
  } else {
    peak.isa = "none";
    return peak;
  }
  std::atomic<int64_t> fmas{0};
  std::atomic<float> sink{0};
  const auto start = std::chrono::steady_clock::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      int64_t done = 0;
      while (std::chrono::steady_clock::now() < until) {
        sink = sink + rounds_fn(kRounds);
        done += kRounds * kChains;
      }
      fmas += done;
    });
  for (auto& t : pool) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  peak.gflops = 2.0 * lanes * static_cast<double>(fmas.load()) / elapsed / 1e9;
  return peak;
}

}  // namespace upp::tools
