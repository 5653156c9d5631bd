// verdant/compression/half.h
//
// IEEE 754 binary16 conversion, round-to-nearest-even, in two back ends that
// are checked against each other: F16C instructions (x86, picked at run time
// with __builtin_cpu_supports) and a portable bit-manipulation fallback.
//   std::vector<uint8_t> h(2 * n);                   // little-endian halves
//   FloatsToHalves(values, h.data());               // best available back end
//   FloatsToHalves(values, h.data(), HalfBackend::kPortable);
//   float x = HalfToFloat(0x3c00);                  // 1.0f
// Buffers of halves are byte pointers (2 bytes per value, little-endian, no
// alignment needed) because they usually sit inside a received message.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace verdant {

enum class HalfBackend {
  kAuto,      // F16C when the CPU has it, else portable
  kPortable,  // plain C++
  kF16c,      // F16C; only valid when HasF16c()
};

// True when this CPU (and build) can run the F16C back end.
bool HasF16c();

// Scalar, portable, exact IEEE conversions (NaN stays NaN, overflow -> Inf).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

// out[i] = FloatToHalf(clamp(in[i], -65504, 65504)): values beyond the half
// range saturate instead of overflowing to Inf. Inputs must be finite.
void FloatsToHalves(std::span<const float> in, uint8_t* out,
                    HalfBackend backend = HalfBackend::kAuto);
// out[i] = HalfToFloat(in[i]) for finite halves. Returns false (out then
// unspecified) if any half is Inf or NaN.
bool HalvesToFloats(const uint8_t* in, size_t n, float* out,
                    HalfBackend backend = HalfBackend::kAuto);
// acc[i] += weight * HalfToFloat(in[i]); false if any half is Inf or NaN
// (acc then partly updated).
bool HalvesAccumulate(const uint8_t* in, size_t n, float weight, float* acc,
                      HalfBackend backend = HalfBackend::kAuto);
// False if any half is Inf or NaN.
bool HalvesFinite(const uint8_t* in, size_t n);

}  // namespace verdant
