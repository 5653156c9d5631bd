// Robustness: 2 of 10 clients send adversarial updates (scaled by 1e6, or
// NaN). Median, trimmed mean and (multi-)Krum stay close to the clean
// aggregate; FedAvg follows the attackers (its failure is asserted, not
// hidden). NaN updates are rejected at AddResult by every rule.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

namespace {

// Honest clients: a common direction plus client noise, as non-IID local
// training produces.
struct Setup {
  std::vector<std::vector<float>> deltas;
  std::vector<double> clean_mean;  // of the 8 honest updates
};

Setup MakeSetup(uint64_t seed, size_t dim, float attack_scale, bool nan_attack) {
  Rng rng(seed);
  Setup s;
  std::vector<float> dir(dim);
  for (auto& v : dir) v = static_cast<float>(0.1 * rng.Normal());
  s.deltas.assign(10, std::vector<float>(dim));
  s.clean_mean.assign(dim, 0.0);
  for (int c = 0; c < 10; ++c) {
    for (size_t i = 0; i < dim; ++i) s.deltas[c][i] = dir[i] + static_cast<float>(0.02 * rng.Normal());
    if (c < 8) {
      for (size_t i = 0; i < dim; ++i) s.clean_mean[i] += s.deltas[c][i] / 8.0;
    }
  }
  for (int c = 8; c < 10; ++c) {
    for (size_t i = 0; i < dim; ++i) {
      s.deltas[c][i] = nan_attack ? (i % 7 == 0 ? std::numeric_limits<float>::quiet_NaN() : 0.f)
                                  : s.deltas[c][i] * attack_scale;
    }
  }
  return s;
}

double RelError(std::span<const float> got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("Robust rules survive 2 of 10 updates scaled by 1e6 while FedAvg does not") {
  const uint64_t seed = testing::TestSeed(424242);
  INFO("seed = " << seed);
  const size_t dim = 4096;
  Setup s = MakeSetup(seed, dim, 1e6f, false);
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.0f));
  struct Rule {
    std::string name;
    OptionMap o;
    double max_rel;
  };
  // Median/trimmed mean of 8 honest + 2 outliers: the coordinate statistic
  // moves by at most a couple of honest order statistics (~noise 0.02 vs
  // signal 0.1 -> ~0.2 relative); Krum picks one honest update (~0.2).
  for (const Rule& r : std::vector<Rule>{{"median", {}, 0.3},
                                         {"trimmedmean", {{"beta", "0.2"}}, 0.3},
                                         {"krum", {{"f", "2"}}, 0.3},
                                         {"multikrum", {{"f", "2"}}, 0.1}}) {
    CAPTURE(r.name);
    auto st = CreateStrategy(r.name, r.o);
    REQUIRE(st.ok());
    REQUIRE((*st)->BeginRound(1, global).ok());
    for (int c = 0; c < 10; ++c) REQUIRE((*st)->AddResult({"c", 100, 0, UpdateView::Floats(s.deltas[c])}).ok());
    auto next = (*st)->FinishRound(1, global, {});
    REQUIRE(next.ok());
    REQUIRE(next->has_value());
    CHECK((**next).AllFinite());
    const double err = RelError((**next).values(), s.clean_mean);
    MESSAGE(r.name << ": relative error vs the clean mean " << err);
    CHECK(err < r.max_rel);
  }
  auto fedavg = CreateStrategy("fedavg", {});
  REQUIRE((*fedavg)->BeginRound(1, global).ok());
  for (int c = 0; c < 10; ++c) REQUIRE((*fedavg)->AddResult({"c", 100, 0, UpdateView::Floats(s.deltas[c])}).ok());
  auto next = (*fedavg)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  const double err = RelError((**next).values(), s.clean_mean);
  MESSAGE("fedavg: relative error vs the clean mean " << err << " (expected: ruined)");
  CHECK(err > 1e4);  // FedAvg follows the attackers: ~2e5 x the clean update
}

TEST_CASE("NaN updates are rejected by every rule and the round goes on") {
  const size_t dim = 1024;
  Setup s = MakeSetup(9, dim, 1.0f, true);
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.0f));
  for (std::string name : {"fedavg", "fedadam", "median", "trimmedmean", "krum", "multikrum", "dp-fedavg"}) {
    CAPTURE(name);
    auto st = CreateStrategy(name, name == "dp-fedavg" ? OptionMap{{"noise_multiplier", "0"}} : OptionMap{});
    REQUIRE(st.ok());
    REQUIRE((*st)->BeginRound(1, global).ok());
    int rejected = 0;
    for (int c = 0; c < 10; ++c) {
      Status a = (*st)->AddResult({"c", 100, 0, UpdateView::Floats(s.deltas[c])});
      if (!a.ok()) {
        CHECK(a.code() == StatusCode::kDataLoss);
        ++rejected;
      }
    }
    CHECK(rejected == 2);
    auto next = (*st)->FinishRound(1, global, {});
    REQUIRE(next.ok());
    REQUIRE(next->has_value());
    CHECK((**next).AllFinite());
    CHECK((*st)->RoundMetrics().at("rejected_updates") == 2);
    if (name == "fedavg" || name == "multikrum") CHECK(RelError((**next).values(), s.clean_mean) < 0.15);
  }
}
