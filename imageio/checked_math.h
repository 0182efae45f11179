// Overflow-checked size arithmetic: the one place where products of sizes and
// counts that come from a file or a request are formed.
//
// Why: a size that wraps passes a limit it should fail (a DICOM file whose
// Rows x Columns x BitsAllocated is exactly 2^32 bytes compared as 0 after a
// 32-bit cast), and a working-memory estimate that wraps negative releases
// more than it reserved. Every factor is checked to be non-negative, every
// product to fit int64_t; a result that would not fit is "none", which
// callers treat as over any limit. Header-only and dependency-free, so the
// torch-free readers, the pipeline and the server share it.
#ifndef UPP_IMAGEIO_CHECKED_MATH_H_
#define UPP_IMAGEIO_CHECKED_MATH_H_

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>

namespace upp::imageio {

// a * b, or nullopt when either is negative or the product overflows int64_t.
constexpr std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b under the same rules.
constexpr std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// The product of all factors under the same rules (1 for none).
constexpr std::optional<int64_t> CheckedProduct(std::initializer_list<int64_t> factors) {
  int64_t r = 1;
  for (int64_t f : factors) {
    const auto next = CheckedMul(r, f);
    if (!next) return std::nullopt;
    r = *next;
  }
  return r;
}

// For estimates compared against limits: the value, or INT64_MAX when it
// could not be formed (so the comparison refuses it).
constexpr int64_t OrMax(std::optional<int64_t> v) { return v ? *v : std::numeric_limits<int64_t>::max(); }

// A finite, non-negative double rounded down to int64_t, or nullopt when it
// is NaN, negative or not below 2^63 (where the cast would be undefined).
inline std::optional<int64_t> CheckedFloor(double v) {
  if (!(v >= 0) || !(v < 9223372036854775808.0)) return std::nullopt;
  return static_cast<int64_t>(std::floor(v));
}

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_CHECKED_MATH_H_
