// Stochastic quantisers are unbiased: the mean of many independent encodings
// approaches the input, within a stated statistical bound.
#include <doctest/doctest.h>

#include <cmath>

#include "codec_test_util.h"
#include "verdant/compression/codecs.h"
#include "verdant/core/parameter_vector.h"

using namespace verdant;
using namespace verdant::codec_test;

namespace {

// Encodes x `trials` times with independent streams and checks, per value,
// |mean - x| <= 6 * step / (2 sqrt(trials)): one encoding's error lies in
// [-step, step] with variance <= step^2/4, so the mean's standard deviation
// is at most step / (2 sqrt(trials)); 6 sigma over 300 values fails by
// chance with probability < 1e-6. `step` is the codec's quantisation step
// for that value (scale for int8/int4, norm/levels for qsgd).
void CheckUnbiased(const std::string& spec, uint64_t seed, const std::vector<double>& step,
                   const std::vector<float>& x, int trials) {
  auto codec = MustCreate(spec);
  Rng rng(seed);
  const size_t n = x.size();
  std::vector<double> sum(n, 0.0);
  std::vector<uint8_t> bytes;
  std::vector<float> y(n);
  for (int t = 0; t < trials; ++t) {
    REQUIRE(codec->Encode(x, rng, bytes).ok());
    REQUIRE(codec->Decode(bytes, y).ok());
    for (size_t i = 0; i < n; ++i) sum[i] += y[i];
  }
  size_t over = 0;
  double total_bias = 0;
  for (size_t i = 0; i < n; ++i) {
    const double mean = sum[i] / trials;
    const double bound = 6.0 * step[i] / (2.0 * std::sqrt(double(trials))) + 1e-6 * std::fabs(double(x[i]));
    over += std::fabs(mean - x[i]) > bound;
    total_bias += (mean - x[i]) / std::max(step[i], 1e-30);
  }
  CAPTURE(spec);
  CHECK(over == 0);
  // The bias averaged over values (in steps) is ~N(0, 1/(2 sqrt(trials n))).
  CHECK(std::fabs(total_bias / n) < 6.0 / (2.0 * std::sqrt(double(trials) * n)));
}

}  // namespace

TEST_CASE("int8 and int4 stochastic rounding is unbiased") {
  const uint64_t seed = Seed(1234, "unbiased int");
  Rng rng(seed);
  const size_t n = 300, chunk = 100;
  auto x = RandomVector(rng, n);
  for (int bits : {8, 4}) {
    std::vector<double> step(n);
    for (size_t s = 0; s < n; s += chunk) {
      double mx = 0;
      for (size_t i = s; i < s + chunk; ++i) mx = std::max(mx, std::fabs(double(x[i])));
      for (size_t i = s; i < s + chunk; ++i) step[i] = mx / (bits == 8 ? 127.0 : 7.0);
    }
    CheckUnbiased((bits == 8 ? "int8:chunk=" : "int4:chunk=") + std::to_string(chunk), seed + bits, step, x, 4000);
  }
}

TEST_CASE("qsgd is unbiased") {
  const uint64_t seed = Seed(4321, "unbiased qsgd");
  Rng rng(seed);
  const size_t n = 300, chunk = 60;
  auto x = RandomVector(rng, n);
  for (int levels : {1, 4, 64}) {
    std::vector<double> step(n);
    for (size_t s = 0; s < n; s += chunk) {
      double ss = 0;
      for (size_t i = s; i < s + chunk; ++i) ss += double(x[i]) * x[i];
      for (size_t i = s; i < s + chunk; ++i) step[i] = std::sqrt(ss) / levels;
    }
    CheckUnbiased("qsgd:" + std::to_string(levels) + ",chunk=" + std::to_string(chunk), seed + levels, step, x, 4000);
  }
}

TEST_CASE("stochastic codecs are reproducible from the rng and differ across streams") {
  Rng data(5);
  auto x = RandomVector(data, 5000);
  for (const char* spec : {"int8", "int4", "qsgd:8", "topk:0.1+int8"}) {
    CAPTURE(spec);
    auto codec = MustCreate(spec);
    std::vector<uint8_t> a, b, c;
    Rng r1(9), r2(9), r3(10);
    REQUIRE(codec->Encode(x, r1, a).ok());
    REQUIRE(codec->Encode(x, r2, b).ok());
    REQUIRE(codec->Encode(x, r3, c).ok());
    CHECK(a == b);
    CHECK(a != c);
  }
}

TEST_CASE("quantisers handle zero, tiny and huge chunks") {
  Rng rng(3);
  for (const char* spec : {"int8:chunk=4", "int4:chunk=4", "qsgd:3,chunk=4"}) {
    CAPTURE(spec);
    auto codec = MustCreate(spec);
    std::vector<float> x = {0, 0, 0, 0,  1e-42f, -3e-45f, 1e-40f, 0,  3e38f, -3.4e38f, 1e38f, 0,  -0.0f, 1, -1, 0.5f};
    std::vector<uint8_t> bytes;
    REQUIRE(codec->Encode(x, rng, bytes).ok());
    REQUIRE(codec->Validate(bytes, x.size()).ok());
    std::vector<float> y(x.size());
    REQUIRE(codec->Decode(bytes, y).ok());
    CHECK(AllFinite(y));
    for (int i = 0; i < 4; ++i) CHECK(y[i] == 0.0f);
    for (int i = 4; i < 8; ++i) CHECK(std::fabs(y[i]) <= 2e-40f);
    for (int i = 8; i < 12; ++i) CHECK(std::fabs(double(y[i]) - double(x[i])) <= 3.5e38);
  }
}
