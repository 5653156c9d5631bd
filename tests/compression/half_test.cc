// fp16: the F16C and portable back ends agree with each other and with an
// exact double-precision reference of round-to-nearest-even.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "codec_test_util.h"
#include "verdant/compression/half.h"

using namespace verdant;
using namespace verdant::codec_test;

namespace {

// Round-to-nearest-even to binary16 computed in double: enumerate the two
// neighbouring halves.
double ReferenceHalf(double x) {
  const double ax = std::fabs(x);
  if (ax >= 65520.0) return std::copysign(INFINITY, x);
  int e;
  std::frexp(ax, &e);                      // ax = f * 2^e, f in [0.5, 1)
  const int exp = std::max(e - 1, -14);    // half exponent (subnormals share -14)
  const double ulp = std::ldexp(1.0, exp - 10);
  const double lo = std::floor(ax / ulp) * ulp;
  const double hi = lo + ulp;
  double r;
  if (ax - lo < hi - ax) {
    r = lo;
  } else if (ax - lo > hi - ax) {
    r = hi;
  } else {
    r = std::fmod(lo / ulp, 2.0) == 0.0 ? lo : hi;
  }
  return std::copysign(r, x);
}

std::vector<float> Probes(Rng& rng) {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, -65504.0f, 65519.0f, 65520.0f, 1e9f, -1e30f,
                          6.1035156e-05f, 6.0975552e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,
                          1e-10f, 1.0009765625f, 1.00048828125f, 1.00146484375f, 0.1f, 3.14159265f};
  for (int i = 0; i < 200000; ++i) {
    // Random bit patterns of finite floats, weighted to the half range.
    uint32_t b = static_cast<uint32_t>(rng.Next());
    if (i % 2 == 0) b = (b & 0x807fffffu) | ((100u + static_cast<uint32_t>(rng.UniformInt(45))) << 23);
    const float f = std::bit_cast<float>(b);
    if (std::isfinite(f)) v.push_back(f);
  }
  // Exact ties: half-way between two halves.
  for (uint32_t h = 0; h < 0x7bff; h += 7) {
    const double a = HalfToFloat(static_cast<uint16_t>(h)), c = HalfToFloat(static_cast<uint16_t>(h + 1));
    v.push_back(static_cast<float>((a + c) / 2));
  }
  return v;
}

}  // namespace

TEST_CASE("scalar FloatToHalf rounds to nearest even, exactly") {
  const uint64_t seed = Seed(16, "fp16 scalar");
  Rng rng(seed);
  for (float f : Probes(rng)) {
    CAPTURE(f);
    const double ref = ReferenceHalf(f);
    const float got = HalfToFloat(FloatToHalf(f));
    if (std::isinf(ref)) {
      CHECK(std::isinf(got));
    } else {
      CHECK(double(got) == ref);
      CHECK(std::signbit(got) == std::signbit(f));
    }
  }
  CHECK(FloatToHalf(INFINITY) == 0x7c00);
  CHECK(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
}

TEST_CASE("HalfToFloat covers every half and all back ends agree") {
  std::vector<uint8_t> all(65536 * 2);
  for (uint32_t h = 0; h < 65536; ++h) std::memcpy(&all[2 * h], &h, 2);
  // Exact decode reference.
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint32_t e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(1.0 + m / 1024.0, int(e) - 15);
    if (h & 0x8000) v = -v;
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    if (e == 31) {
      CHECK((m == 0 ? std::isinf(got) : std::isnan(got)));
    } else {
      CHECK(double(got) == v);
    }
  }
  std::vector<HalfBackend> backends = {HalfBackend::kPortable};
  if (HasF16c()) backends.push_back(HalfBackend::kF16c);
  MESSAGE("F16C available: " << HasF16c());
  std::vector<uint8_t> finite;
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) != 31) finite.insert(finite.end(), {static_cast<uint8_t>(h), static_cast<uint8_t>(h >> 8)});
  }
  const size_t nf = finite.size() / 2;
  for (HalfBackend b : backends) {
    std::vector<float> out(nf);
    REQUIRE(HalvesToFloats(finite.data(), nf, out.data(), b));
    for (size_t i = 0; i < nf; ++i) {
      uint16_t h;
      std::memcpy(&h, &finite[2 * i], 2);
      REQUIRE(std::bit_cast<uint32_t>(out[i]) == std::bit_cast<uint32_t>(HalfToFloat(h)));
    }
    std::vector<float> acc(nf, 1.0f);
    REQUIRE(HalvesAccumulate(finite.data(), nf, 0.5f, acc.data(), b));
    for (size_t i = 0; i < nf; ++i) REQUIRE(acc[i] == 1.0f + 0.5f * out[i]);
    std::vector<float> tmp(65536);
    CHECK_FALSE(HalvesToFloats(all.data(), 65536, tmp.data(), b));
    // An Inf in the tail (not a multiple of 8) is seen too.
    const uint8_t inf_tail[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7c};
    CHECK_FALSE(HalvesToFloats(inf_tail, 10, tmp.data(), b));
  }
  CHECK_FALSE(HalvesFinite(all.data(), 65536));
  CHECK(HalvesFinite(finite.data(), nf));
}

TEST_CASE("F16C and portable encoders agree bit for bit, with saturation") {
  const uint64_t seed = Seed(17, "fp16 back ends");
  Rng rng(seed);
  const auto probes = Probes(rng);
  std::vector<uint8_t> portable(probes.size() * 2), f16c(probes.size() * 2);
  FloatsToHalves(probes, portable.data(), HalfBackend::kPortable);
  for (size_t i = 0; i < probes.size(); ++i) {
    const float clamped = std::min(std::max(probes[i], -65504.0f), 65504.0f);
    uint16_t h;
    std::memcpy(&h, &portable[2 * i], 2);
    CAPTURE(probes[i]);
    REQUIRE(h == FloatToHalf(clamped));
  }
  if (HasF16c()) {
    FloatsToHalves(probes, f16c.data(), HalfBackend::kF16c);
    CHECK(f16c == portable);
  }
}
