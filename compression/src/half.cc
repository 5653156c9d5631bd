#include "verdant/compression/half.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "codec_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define VERDANT_HAVE_F16C_PATH 1
#endif

namespace verdant {
namespace {

constexpr float kHalfMax = 65504.0f;

// Branch-free RNE conversion of a finite float with |f| <= 65504 (ryg's
// float_to_half_fast3_rtne); vectorises in a plain loop.
inline uint16_t ClampedFloatToHalf(float f) {
  f = std::min(std::max(f, -kHalfMax), kHalfMax);
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t x = u & 0x7fffffffu;
  // Normal halves: re-bias and round the 13 dropped bits to nearest even.
  const uint32_t normal = ((x + 0xfffu + ((x >> 13) & 1u)) >> 13) - (112u << 10);
  // Subnormal halves: adding 0.5f makes the FPU round to a 2^-24 grid.
  const float sub_f = std::bit_cast<float>(x) + 0.5f;
  const uint32_t sub = std::bit_cast<uint32_t>(sub_f) - 0x3f000000u;
  return static_cast<uint16_t>(sign | (x < 0x38800000u ? sub : normal));
}

// Finite halves only (exponent 31 is checked separately).
inline float FiniteHalfToFloat(uint16_t h) {
  const uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const float mag = std::bit_cast<float>(o) * std::bit_cast<float>(0x77800000u);  // 2^112
  return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | (static_cast<uint32_t>(h & 0x8000u) << 16));
}

inline uint16_t LoadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

VERDANT_KERNEL void PortableEncode(const float* in, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h = ClampedFloatToHalf(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

VERDANT_KERNEL bool PortableDecode(const uint8_t* in, size_t n, float* out) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint16_t h = LoadHalf(in + 2 * i);
    bad |= static_cast<uint32_t>((h & 0x7c00u) == 0x7c00u);
    out[i] = FiniteHalfToFloat(h);
  }
  return bad == 0;
}

VERDANT_KERNEL bool PortableAccumulate(const uint8_t* in, size_t n, float w, float* acc) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint16_t h = LoadHalf(in + 2 * i);
    bad |= static_cast<uint32_t>((h & 0x7c00u) == 0x7c00u);
    acc[i] += w * FiniteHalfToFloat(h);
  }
  return bad == 0;
}

VERDANT_KERNEL bool PortableFinite(const uint8_t* in, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((LoadHalf(in + 2 * i) & 0x7c00u) == 0x7c00u);
  return bad == 0;
}

#ifdef VERDANT_HAVE_F16C_PATH
__attribute__((target("avx2,f16c"))) void F16cEncode(const float* in, size_t n, uint8_t* out) {
  const __m256 hi = _mm256_set1_ps(kHalfMax);
  const __m256 lo = _mm256_set1_ps(-kHalfMax);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(in + i), lo), hi);
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  for (; i < n; ++i) {
    __m128 v = _mm_min_ss(_mm_max_ss(_mm_set_ss(in[i]), _mm_set_ss(-kHalfMax)), _mm_set_ss(kHalfMax));
    uint16_t h = static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT), 0));
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// Exponent-31 test on 8 halves: returns a non-zero mask if any is Inf/NaN.
__attribute__((target("avx2,f16c"))) inline __m128i BadHalves(__m128i h) {
  const __m128i e = _mm_set1_epi16(0x7c00);
  return _mm_cmpeq_epi16(_mm_and_si128(h, e), e);
}

__attribute__((target("avx2,f16c"))) bool F16cDecode(const uint8_t* in, size_t n, float* out) {
  __m128i bad = _mm_setzero_si128();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    bad = _mm_or_si128(bad, BadHalves(h));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  bool ok = _mm_testz_si128(bad, bad);
  for (; i < n; ++i) {
    uint16_t h = LoadHalf(in + 2 * i);
    ok &= (h & 0x7c00u) != 0x7c00u;
    out[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
  }
  return ok;
}

__attribute__((target("avx2,f16c,fma"))) bool F16cAccumulate(const uint8_t* in, size_t n, float w,
                                                               float* acc) {
  __m128i bad = _mm_setzero_si128();
  const __m256 vw = _mm256_set1_ps(w);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i + 16));
    bad = _mm_or_si128(bad, _mm_or_si128(BadHalves(h0), BadHalves(h1)));
    __m256 a0 = _mm256_loadu_ps(acc + i);
    __m256 a1 = _mm256_loadu_ps(acc + i + 8);
    _mm256_storeu_ps(acc + i, _mm256_add_ps(a0, _mm256_mul_ps(vw, _mm256_cvtph_ps(h0))));
    _mm256_storeu_ps(acc + i + 8, _mm256_add_ps(a1, _mm256_mul_ps(vw, _mm256_cvtph_ps(h1))));
  }
  bool ok = _mm_testz_si128(bad, bad);
  for (; i < n; ++i) {
    uint16_t h = LoadHalf(in + 2 * i);
    ok &= (h & 0x7c00u) != 0x7c00u;
    acc[i] += w * _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
  }
  return ok;
}
#endif

bool UseF16c(HalfBackend backend) {
  if (backend == HalfBackend::kPortable) return false;
  if (backend == HalfBackend::kF16c) return true;
  return HasF16c();
}

}  // namespace

bool HasF16c() {
#ifdef VERDANT_HAVE_F16C_PATH
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                          __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

uint16_t FloatToHalf(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t x = u & 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / Inf
  if (x >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to Inf
  if (x >= 0x38800000u) {                      // normal half
    return static_cast<uint16_t>(sign | (((x + 0xfffu + ((x >> 13) & 1u)) >> 13) - (112u << 10)));
  }
  if (x <= 0x33000000u) return sign;  // <= 2^-25 rounds to (signed) zero
  const uint32_t e = x >> 23;         // 102 .. 112
  const uint32_t m = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14 .. 24
  uint32_t r = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    float v = static_cast<float>(m) * (1.0f / 16777216.0f);  // m * 2^-24, exact
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

void FloatsToHalves(std::span<const float> in, uint8_t* out, HalfBackend backend) {
#ifdef VERDANT_HAVE_F16C_PATH
  if (UseF16c(backend)) return F16cEncode(in.data(), in.size(), out);
#endif
  PortableEncode(in.data(), in.size(), out);
}

bool HalvesToFloats(const uint8_t* in, size_t n, float* out, HalfBackend backend) {
#ifdef VERDANT_HAVE_F16C_PATH
  if (UseF16c(backend)) return F16cDecode(in, n, out);
#endif
  return PortableDecode(in, n, out);
}

bool HalvesAccumulate(const uint8_t* in, size_t n, float weight, float* acc, HalfBackend backend) {
#ifdef VERDANT_HAVE_F16C_PATH
  if (UseF16c(backend)) return F16cAccumulate(in, n, weight, acc);
#endif
  return PortableAccumulate(in, n, weight, acc);
}

bool HalvesFinite(const uint8_t* in, size_t n) { return PortableFinite(in, n); }

}  // namespace verdant
