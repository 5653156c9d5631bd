// Error feedback conserves mass, survives serialisation and rejects corrupt
// state.
#include <doctest/doctest.h>

#include <cmath>

#include "codec_test_util.h"
#include "verdant/compression/error_feedback.h"
#include "verdant/core/parameter_vector.h"

using namespace verdant;
using namespace verdant::codec_test;

TEST_CASE("error feedback conserves mass: sent + residual == sum of deltas") {
  const uint64_t seed = Seed(8080, "error feedback mass");
  for (std::string spec : {"topk:0.01", "topk:0.1+int8", "int4", "qsgd:2", "fp16", "identity"}) {
    CAPTURE(spec);
    Rng rng(seed);
    auto codec = MustCreate(spec);
    ErrorFeedback ef;
    const size_t n = 20000;
    std::vector<double> delta_sum(n, 0.0), sent_sum(n, 0.0), mass(n, 0.0);
    std::vector<uint8_t> bytes;
    std::vector<float> sent(n);
    for (int round = 0; round < 30; ++round) {
      auto delta = RandomVector(rng, n, 0.01);
      for (size_t i = 0; i < n; ++i) delta_sum[i] += delta[i], mass[i] += std::fabs(double(delta[i]));
      REQUIRE(ef.Encode(*codec, delta, rng, bytes).ok());
      REQUIRE(codec->Decode(bytes, sent).ok());
      for (size_t i = 0; i < n; ++i) sent_sum[i] += sent[i], mass[i] += 2 * std::fabs(double(sent[i]));
    }
    auto r = ef.residual();
    REQUIRE(r.size() == n);
    // Each round adds and subtracts in float (one rounding of at most half
    // an ulp, 6e-8 relative, per operation): the drift is bounded by a few
    // ulps of the mass that passed through each value.
    double worst = 0;
    size_t over = 0;
    for (size_t i = 0; i < n; ++i) {
      const double err = std::fabs(sent_sum[i] + r[i] - delta_sum[i]);
      worst = std::max(worst, err);
      over += err > 2.4e-7 * (mass[i] + std::fabs(r[i])) + 1e-30;
    }
    MESSAGE(spec << ": worst |sent + residual - sum(delta)| = " << worst);
    CHECK(over == 0);
  }
}

TEST_CASE("error feedback residual shrinks what top-k drops over rounds") {
  // A constant delta under topk:0.1 is eventually sent in full: every value
  // is transmitted within ~15 rounds (threshold ~ sum(delta)/k = 15 x the
  // smallest value) thanks to the residual.
  Rng rng(4);
  auto codec = MustCreate("topk:0.1");
  ErrorFeedback ef;
  std::vector<float> delta(1000);
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = 1.0f + 0.001f * static_cast<float>(i);
  std::vector<uint8_t> bytes;
  std::vector<float> y(delta.size());
  std::vector<char> seen(delta.size(), 0);
  for (int round = 0; round < 40; ++round) {
    REQUIRE(ef.Encode(*codec, delta, rng, bytes).ok());
    REQUIRE(codec->Decode(bytes, y).ok());
    for (size_t i = 0; i < y.size(); ++i) seen[i] |= y[i] != 0.0f;
  }
  size_t never = 0;
  for (char s : seen) never += !s;
  CHECK(never == 0);
}

TEST_CASE("error feedback state round-trips through bytes and files") {
  const uint64_t seed = Seed(99, "error feedback persist");
  Rng rng(seed);
  auto codec = MustCreate("topk:0.05+int8");
  ErrorFeedback a(0xfeedULL);
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 3; ++i) REQUIRE(a.Encode(*codec, RandomVector(rng, 5000), rng, bytes).ok());

  auto ser = a.Serialize();
  auto b = ErrorFeedback::Deserialize(ser);
  REQUIRE(b.ok());
  CHECK(b->tag() == 0xfeedULL);
  CHECK(std::equal(a.residual().begin(), a.residual().end(), b->residual().begin(), b->residual().end()));
  // A restored client continues exactly like one that never stopped.
  const auto next = RandomVector(rng, 5000);
  std::vector<uint8_t> out_a, out_b;
  Rng r1(7), r2(7);
  REQUIRE(a.Encode(*codec, next, r1, out_a).ok());
  REQUIRE(b->Encode(*codec, next, r2, out_b).ok());
  CHECK(out_a == out_b);

  testing::TempDir dir;
  const auto path = dir.path() / "residual.bin";
  CHECK(ErrorFeedback::LoadFromFile(path).status().code() == StatusCode::kNotFound);
  REQUIRE(a.SaveToFile(path).ok());
  auto c = ErrorFeedback::LoadFromFile(path);
  REQUIRE(c.ok());
  CHECK(c->Serialize() == a.Serialize());

  // Corruption and truncation are kDataLoss.
  for (size_t cut : {size_t{0}, size_t{3}, size_t{27}, ser.size() - 1}) {
    CHECK(ErrorFeedback::Deserialize(std::span<const uint8_t>(ser.data(), cut)).status().code() ==
          StatusCode::kDataLoss);
  }
  for (int trial = 0; trial < 100; ++trial) {
    auto bad = ser;
    bad[rng.UniformInt(bad.size())] ^= static_cast<uint8_t>(1 + rng.UniformInt(255));
    CHECK(ErrorFeedback::Deserialize(bad).status().code() == StatusCode::kDataLoss);
  }
  // A header claiming 2^60 values is rejected before allocating.
  auto huge = ser;
  huge[12 + 7] = 0x10;
  CHECK(ErrorFeedback::Deserialize(huge).status().code() == StatusCode::kDataLoss);
  testing::WriteFile(path, "garbage");
  CHECK(ErrorFeedback::LoadFromFile(path).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("error feedback refuses a delta of another size and keeps state on error") {
  Rng rng(2);
  auto codec = MustCreate("int8");
  ErrorFeedback ef;
  std::vector<uint8_t> bytes;
  REQUIRE(ef.Encode(*codec, RandomVector(rng, 100), rng, bytes).ok());
  const std::vector<float> before(ef.residual().begin(), ef.residual().end());
  CHECK(ef.Encode(*codec, RandomVector(rng, 101), rng, bytes).code() == StatusCode::kFailedPrecondition);
  std::vector<float> nan_delta(100, 0.0f);
  nan_delta[5] = std::nanf("");
  CHECK(ef.Encode(*codec, nan_delta, rng, bytes).code() == StatusCode::kInvalidArgument);
  CHECK(std::equal(before.begin(), before.end(), ef.residual().begin(), ef.residual().end()));
  ef.Reset();
  CHECK(ef.Encode(*codec, RandomVector(rng, 101), rng, bytes).ok());
  CHECK(ef.residual().size() == 101);
}
