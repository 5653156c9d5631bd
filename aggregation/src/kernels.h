// aggregation/src/kernels.h (private)
//
// Small vectorisable kernels shared by the aggregators. Plain loops over
// __restrict pointers that GCC/Clang vectorise at -O2/-O3 without
// -ffast-math; each is checked against a double reference in
// tests/aggregation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace verdant::internal {

// True when no value is NaN or +-Inf. Tests the exponent bits with an
// integer OR-reduction, which (unlike a float sum) the compiler may
// reassociate, so the loop vectorises and runs at memory speed.
inline bool AllFiniteFast(const float* __restrict x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// sum += w * x.
inline void Axpy(float w, const float* __restrict x, float* __restrict sum, size_t n) {
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i) sum[i] += w * x[i];
}

// The same two kernels over little-endian float32 bytes (the identity wire
// format); memcpy loads keep them alignment-safe and still vectorise.
inline bool AllFiniteBytes(const uint8_t* __restrict p, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i * 4, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

inline void AxpyBytes(float w, const uint8_t* __restrict p, float* __restrict sum, size_t n) {
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, p + i * 4, sizeof x);
    sum[i] += w * x;
  }
}

}  // namespace verdant::internal
