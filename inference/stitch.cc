#include "inference/stitch.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#if defined(UPP_HAVE_LIBMVEC)
// glibc's vector maths library: declaring expf as a SIMD function lets the
// compiler's vectoriser call its AVX-512 / AVX2 / SSE versions
// (_ZGVeN16v_expf, ...; at most a few ulp from expf), the same declaration
// glibc's <math.h> makes under -ffast-math, which this file does not want.
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}
#endif

namespace upp::inference {
namespace {

// Voxels of a row handled at once: classes x kChunk floats stay in L1/L2.
constexpr int64_t kChunk = 512;

using HalfRowFn = void (*)(uint16_t*, const float*, const float*, int64_t);

// acc[i] += e[i] * scale[i] on float16 accumulators, rounding to nearest
// even as ATen's float -> half conversion does.
void AddHalfRowBaseline(uint16_t* acc, const float* e, const float* scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float sum = static_cast<float>(c10::Half(acc[i], c10::Half::from_bits())) + e[i] * scale[i];
    acc[i] = c10::Half(sum).x;
  }
}

__attribute__((target("avx2,fma,f16c"))) void AddHalfRowAvx2(uint16_t* acc, const float* e, const float* scale,
                                                             int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + i)));
    a = _mm256_fmadd_ps(_mm256_loadu_ps(e + i), _mm256_loadu_ps(scale + i), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(acc + i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
  }
  AddHalfRowBaseline(acc + i, e + i, scale + i, n - i);
}

// One chunk of a row: e holds the classes' logits (k rows, `stride` floats
// apart), turned in place into exponentials; scale receives weight / sum of
// exponentials.
__attribute__((always_inline)) inline void SoftmaxChunk(float* __restrict e, int64_t k, int64_t stride, int64_t n,
                                                        const float* __restrict weight, float* __restrict scale,
                                                        float* __restrict sum) {
  // Subtracting the largest logit keeps expf finite, as every softmax does.
  std::copy(e, e + n, scale);
  for (int64_t c = 1; c < k; ++c) {
    const float* __restrict ec = e + c * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) scale[i] = ec[i] > scale[i] ? ec[i] : scale[i];
  }
  std::fill(sum, sum + n, 0.0f);
  for (int64_t c = 0; c < k; ++c) {
    float* __restrict ec = e + c * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      ec[i] = expf(ec[i] - scale[i]);
      sum[i] += ec[i];
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) scale[i] = weight[i] / sum[i];
}

// Asks for `rows` rows of `bytes` bytes, `stride` bytes apart, to be brought
// into the caches.
inline void Prefetch(const void* first, int64_t stride, int64_t rows, int64_t bytes, bool for_writing) {
  for (int64_t r = 0; r < rows; ++r) {
    // Only addresses inside the rows are formed: one stride past the last
    // row may lie beyond the tensor.
    const char* p = static_cast<const char*>(first) + r * stride;
    for (int64_t b = 0; b < bytes; b += 64) {
      if (for_writing) {
        __builtin_prefetch(p + b, 1);
      } else {
        __builtin_prefetch(p + b, 0);
      }
    }
  }
}

// Slices [d0, d1) of the window, row by row; inlined into each ISA's function below so
// that the compiler vectorises it for that ISA.
template <HalfRowFn kAddHalf>
__attribute__((always_inline)) inline void StitchBody(const float* logits, int64_t k,
                                                      const std::array<int64_t, 3>& patch,
                                                      const std::array<bool, 3>& flip, const float* weight,
                                                      const AccumulatorWindow& acc, int64_t d0, int64_t d1) {
  const int64_t pd = patch[0], ph = patch[1], pw = patch[2];
  const int64_t plane = ph * pw, volume = pd * plane;
  // Narrow windows get a narrow buffer: k rows of `chunk` logits, then the
  // scales and sums.
  const int64_t chunk = std::min(kChunk, pw);
  std::vector<float> buffer(static_cast<size_t>((k + 2) * chunk));
  float* __restrict e = buffer.data();
  float* __restrict scale = e + k * chunk;
  float* __restrict sum = scale + chunk;
  auto src_row = [&](int64_t d, int64_t h) {
    return logits + (flip[0] ? pd - 1 - d : d) * plane + (flip[1] ? ph - 1 - h : h) * pw;
  };
  const int64_t acc_bytes = acc.half ? 2 : 4;
  for (int64_t d = d0; d < d1; ++d) {
    for (int64_t h = 0; h < ph; ++h) {
      const float* src = src_row(d, h);
      const int64_t offset = d * acc.d_stride + h * acc.h_stride;
      // The next row's logits and accumulators: 2k short rows far apart in
      // memory, too short for the hardware prefetchers to ramp up on (a
      // synapse window on one thread into 14 x 64 x 539 x 539 accumulators:
      // 20 -> 18 ms on the Zen 5 EPYC).
      if (h + 1 < ph || d + 1 < d1) {
        const int64_t nd = h + 1 < ph ? d : d + 1, nh = h + 1 < ph ? h + 1 : 0;
        Prefetch(src_row(nd, nh), volume * 4, k, pw * 4, false);
        Prefetch(static_cast<const char*>(acc.data) + (nd * acc.d_stride + nh * acc.h_stride) * acc_bytes,
                 acc.class_stride * acc_bytes, k, pw * acc_bytes, true);
      }
      for (int64_t w0 = 0; w0 < pw; w0 += chunk) {
        const int64_t n = std::min(chunk, pw - w0);
        for (int64_t c = 0; c < k; ++c) {  // the row, un-mirrored along W
          float* __restrict ec = e + c * chunk;
          if (flip[2]) {
            const float* __restrict r = src + c * volume + (pw - 1 - w0);
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) ec[i] = r[-i];
          } else {
            std::copy(src + c * volume + w0, src + c * volume + w0 + n, ec);
          }
        }
        SoftmaxChunk(e, k, chunk, n, weight + d * plane + h * pw + w0, scale, sum);
        for (int64_t c = 0; c < k; ++c) {
          const float* __restrict ec = e + c * chunk;
          const int64_t at = offset + c * acc.class_stride + w0;
          if (acc.half) {
            kAddHalf(static_cast<uint16_t*>(acc.data) + at, ec, scale, n);
          } else {
            float* __restrict a = static_cast<float*>(acc.data) + at;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) a[i] += ec[i] * scale[i];
          }
        }
      }
    }
  }
}

using StitchFn = void (*)(const float*, int64_t, const std::array<int64_t, 3>&, const std::array<bool, 3>&,
                          const float*, const AccumulatorWindow&, int64_t, int64_t);

__attribute__((target("avx512f,avx2,fma,f16c"))) void StitchAvx512(const float* logits, int64_t k,
                                                                   const std::array<int64_t, 3>& patch,
                                                                   const std::array<bool, 3>& flip, const float* weight,
                                                                   const AccumulatorWindow& acc, int64_t d0,
                                                                   int64_t d1) {
  // 256-bit conversions here too: the float16 additions are bound by memory,
  // and GCC 12 warns falsely about _mm512_cvtph_ps (its bug 105593).
  StitchBody<&AddHalfRowAvx2>(logits, k, patch, flip, weight, acc, d0, d1);
}
__attribute__((target("avx2,fma,f16c"))) void StitchAvx2(const float* logits, int64_t k,
                                                         const std::array<int64_t, 3>& patch,
                                                         const std::array<bool, 3>& flip, const float* weight,
                                                         const AccumulatorWindow& acc, int64_t d0, int64_t d1) {
  StitchBody<&AddHalfRowAvx2>(logits, k, patch, flip, weight, acc, d0, d1);
}
void StitchBaseline(const float* logits, int64_t k, const std::array<int64_t, 3>& patch,
                    const std::array<bool, 3>& flip, const float* weight, const AccumulatorWindow& acc, int64_t d0,
                    int64_t d1) {
  StitchBody<&AddHalfRowBaseline>(logits, k, patch, flip, weight, acc, d0, d1);
}

// The window's slices shared among LibTorch's intra-op threads (ATen's
// operators it replaces used them too); each slice touches its own rows of
// the accumulators.
void Run(StitchFn fn, const float* logits, int64_t k, const std::array<int64_t, 3>& patch,
         const std::array<bool, 3>& flip, const float* weight, const AccumulatorWindow& acc) {
  at::parallel_for(0, patch[0], 1, [&](int64_t d0, int64_t d1) { fn(logits, k, patch, flip, weight, acc, d0, d1); });
}

struct Variant {
  const char* name;
  StitchFn fn;
  bool (*supported)();
};

// Chosen with __builtin_cpu_supports rather than target_clones, whose
// load-time resolver crashes under the sanitizers (as in model/onednn.cc).
bool HasAvx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
const Variant kVariants[] = {
    // The AVX-512 variant runs AVX2/FMA code too (its float16 rows): a
    // virtual CPU may offer AVX-512F and hide FMA.
    {"avx512", &StitchAvx512, [] { return __builtin_cpu_supports("avx512f") && HasAvx2(); }},
    {"avx2", &StitchAvx2, &HasAvx2},
    {"baseline", &StitchBaseline, [] { return true; }},
};

StitchFn Widest() {
  static const StitchFn fn = [] {
    __builtin_cpu_init();
    for (const Variant& v : kVariants)
      if (v.supported()) return v.fn;
    return &StitchBaseline;
  }();
  return fn;
}

}  // namespace

void AddSoftmaxWindow(const float* logits, int64_t classes, const std::array<int64_t, 3>& patch,
                      const std::array<bool, 3>& flip, const float* weight, const AccumulatorWindow& acc) {
  Run(Widest(), logits, classes, patch, flip, weight, acc);
}

namespace internal {

std::vector<std::string> StitchVariants() {
  __builtin_cpu_init();
  std::vector<std::string> names;
  for (const Variant& v : kVariants)
    if (v.supported()) names.push_back(v.name);
  return names;
}

void AddSoftmaxWindowWith(const std::string& variant, const float* logits, int64_t classes,
                          const std::array<int64_t, 3>& patch, const std::array<bool, 3>& flip, const float* weight,
                          const AccumulatorWindow& acc) {
  for (const Variant& v : kVariants)
    if (variant == v.name && v.supported()) return Run(v.fn, logits, classes, patch, flip, weight, acc);
  throw std::invalid_argument("no stitching variant \"" + variant + "\" on this CPU");
}

}  // namespace internal
}  // namespace upp::inference
