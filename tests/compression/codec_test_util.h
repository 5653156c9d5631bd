// Helpers for the compression suites: random vectors, seeds, codec creation.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "verdant/compression/codec.h"
#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"

namespace verdant::codec_test {

// Every built-in spec family the suites exercise.
inline const std::vector<std::string>& AllSpecs() {
  static const std::vector<std::string> specs = {
      "identity", "fp16",        "int8",          "int8:chunk=100", "int4",           "int4:chunk=33",
      "qsgd:1",   "qsgd:16",     "qsgd:127,chunk=100", "topk:0.1", "topk:0.01+int8", "topk:0.3+fp16",
      "topk:0.05+int4", "topk:0.2+qsgd:8", "topk:1"};
  return specs;
}

inline std::unique_ptr<UpdateCodec> MustCreate(const std::string& spec) {
  auto c = CreateCodec(spec);
  REQUIRE_MESSAGE(c.ok(), spec << ": " << c.status().ToString());
  return std::move(*c);
}

// The suite seed (VERDANT_TEST_SEED overrides), printed for replay.
inline uint64_t Seed(uint64_t fallback, const char* what) {
  const uint64_t seed = testing::TestSeed(fallback);
  MESSAGE(what << ": seed " << seed << " (replay with VERDANT_TEST_SEED=" << seed << ")");
  return seed;
}

// Gaussian values with a sprinkle of exact zeros, large and tiny magnitudes.
inline std::vector<float> RandomVector(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double u = rng.Uniform();
    if (u < 0.02) {
      v[i] = 0.0f;
    } else if (u < 0.03) {
      v[i] = static_cast<float>(scale * 1e-6 * rng.Normal());
    } else if (u < 0.035) {
      v[i] = static_cast<float>(scale * 20.0 * rng.Normal());
    } else {
      v[i] = static_cast<float>(scale * rng.Normal());
    }
  }
  return v;
}

}  // namespace verdant::codec_test
