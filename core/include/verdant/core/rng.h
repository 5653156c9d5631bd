// verdant/core/rng.h
//
// Rng: a small, seeded, reproducible generator (xoshiro256**, seeded through
// SplitMix64) with the distributions Verdant needs. Same seed, same stream,
// on every platform — unlike std::*_distribution, whose output is
// implementation-defined.
//   Rng rng(42);
//   double u = rng.Uniform();          // [0, 1)
//   auto child = rng.Fork(client_id);  // independent, reproducible sub-stream
// Thread-safety: not thread-safe; give each thread its own (Fork).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace verdant {

class Rng {
 public:
  using result_type = uint64_t;
  explicit Rng(uint64_t seed = 0);

  uint64_t Next();
  uint64_t operator()() { return Next(); }
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return ~uint64_t{0}; }

  // Uniform double in [0, 1).
  double Uniform();
  // Uniform float in [0, 1) (24 random bits).
  float UniformFloat();
  // Uniform integer in [0, n); n > 0.
  uint64_t UniformInt(uint64_t n);
  // Standard normal (Box-Muller, deterministic).
  double Normal();
  // Gamma(shape, 1) (Marsaglia-Tsang), shape > 0.
  double Gamma(double shape);
  // A Dirichlet(alpha, ..., alpha) sample of dimension k.
  std::vector<double> Dirichlet(double alpha, int k);
  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::span<T> v) {
    for (size_t i = v.size(); i > 1; --i) {
      size_t j = static_cast<size_t>(UniformInt(i));
      std::swap(v[i - 1], v[j]);
    }
  }
  // An independent generator derived from this seed and a stream id; does
  // not advance this generator.
  Rng Fork(uint64_t stream) const;
  uint64_t seed() const { return seed_; }

  // The generator's whole state, for checkpoints: FromState(state())
  // continues the stream exactly where state() was taken.
  struct State {
    uint64_t seed = 0;
    uint64_t s[4] = {0, 0, 0, 0};
    bool has_spare_normal = false;
    double spare_normal = 0.0;
  };
  State state() const;
  static Rng FromState(const State& state);

 private:
  uint64_t seed_;
  uint64_t s_[4];
  bool has_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

// SplitMix64 step: a good 64-bit mixer for deriving seeds.
uint64_t SplitMix64(uint64_t& state);

}  // namespace verdant
