#include "verdant/core/rng.h"

#include <cmath>
#include <numbers>

namespace verdant {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Rng::Rng(uint64_t seed) : seed_(seed) {
  uint64_t st = seed;
  for (auto& s : s_) s = SplitMix64(st);
}

Rng::State Rng::state() const {
  State st;
  st.seed = seed_;
  for (int i = 0; i < 4; ++i) st.s[i] = s_[i];
  st.has_spare_normal = has_spare_normal_;
  st.spare_normal = spare_normal_;
  return st;
}

Rng Rng::FromState(const State& st) {
  Rng r(st.seed);
  for (int i = 0; i < 4; ++i) r.s_[i] = st.s[i];
  r.has_spare_normal_ = st.has_spare_normal;
  r.spare_normal_ = st.spare_normal;
  return r;
}

static inline uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
float Rng::UniformFloat() { return static_cast<float>(Next() >> 40) * 0x1.0p-24f; }

uint64_t Rng::UniformInt(uint64_t n) {
  // Lemire's nearly divisionless method, with rejection for exact uniformity.
  __uint128_t m = static_cast<__uint128_t>(Next()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    uint64_t threshold = -n % n;
    while (low < threshold) {
      m = static_cast<__uint128_t>(Next()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double Rng::Normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = Uniform();
  double u2 = Uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  double th = 2.0 * std::numbers::pi * u2;
  spare_normal_ = r * std::sin(th);
  has_spare_normal_ = true;
  return r * std::cos(th);
}

double Rng::Gamma(double shape) {
  if (shape < 1.0) {
    // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
    double u = 0.0;
    while (u <= 0.0) u = Uniform();
    return Gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = Normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    double u = Uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

std::vector<double> Rng::Dirichlet(double alpha, int k) {
  std::vector<double> out(static_cast<size_t>(k));
  double sum = 0.0;
  for (auto& x : out) sum += (x = Gamma(alpha));
  if (sum <= 0.0) {
    for (auto& x : out) x = 1.0 / k;
    return out;
  }
  for (auto& x : out) x /= sum;
  return out;
}

Rng Rng::Fork(uint64_t stream) const {
  uint64_t st = seed_ ^ (0xd1b54a32d192ed03ull * (stream + 1));
  return Rng(SplitMix64(st));
}

}  // namespace verdant
