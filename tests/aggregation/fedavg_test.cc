#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

// Double-precision FedAvg reference: global + sum_i n_i d_i / sum_i n_i.
static std::vector<double> Reference(const std::vector<float>& global,
                                     const std::vector<std::vector<float>>& deltas,
                                     const std::vector<uint64_t>& n) {
  std::vector<double> out(global.begin(), global.end());
  double total = 0;
  for (auto x : n) total += static_cast<double>(x);
  for (size_t c = 0; c < deltas.size(); ++c)
    for (size_t i = 0; i < out.size(); ++i) out[i] += (double(n[c]) / total) * double(deltas[c][i]);
  return out;
}

TEST_CASE("FedAvg matches a double-precision reference on random updates") {
  const uint64_t seed = testing::TestSeed(20261123);
  INFO("seed = " << seed);
  Rng rng(seed);
  const size_t dim = 10007;
  const int clients = 17;
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim));
  for (auto& v : global.values()) v = static_cast<float>(rng.Normal());
  std::vector<std::vector<float>> deltas(clients, std::vector<float>(dim));
  std::vector<uint64_t> n(clients);
  for (int c = 0; c < clients; ++c) {
    n[c] = 1 + rng.UniformInt(5000);
    for (auto& v : deltas[c]) v = static_cast<float>(rng.Normal() * 0.1);
  }
  auto s = CreateStrategy("fedavg", {});
  REQUIRE(s.ok());
  REQUIRE((*s)->BeginRound(1, global).ok());
  auto codec = CreateCodec("identity");
  REQUIRE(codec.ok());
  std::vector<std::vector<uint8_t>> encoded(clients);
  for (int c = 0; c < clients; ++c) {
    ClientResult r;
    r.client_id = "c" + std::to_string(c);
    r.num_examples = n[c];
    if (c % 2 == 0) {
      r.delta = UpdateView::Floats(deltas[c]);
    } else {  // half of them arrive encoded, as over the wire
      REQUIRE((*codec)->Encode(deltas[c], rng, encoded[c]).ok());
      r.delta = UpdateView::Encoded(encoded[c], **codec);
    }
    REQUIRE((*s)->AddResult(r).ok());
  }
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  REQUIRE(next->has_value());
  auto ref = Reference(std::vector<float>(global.values().begin(), global.values().end()), deltas, n);
  double max_err = 0;
  for (size_t i = 0; i < dim; ++i) max_err = std::max(max_err, std::abs(double((**next).values()[i]) - ref[i]));
  // float32 accumulation of 17 weighted terms of magnitude <~1: error bound
  // ~ clients * eps * max|w x| ~ 17 * 6e-8 * 5000*0.5 -> normalised ~1e-5.
  CHECK(max_err < 1e-5);
}

TEST_CASE("FedAvg rejects bad updates without disturbing the sum") {
  ParameterVector global = ParameterVector::Flat(std::vector<float>(4, 1.0f));
  auto s = CreateStrategy("fedavg", {});
  REQUIRE(s.ok());
  REQUIRE((*s)->BeginRound(1, global).ok());
  std::vector<float> good{1, 2, 3, 4};
  std::vector<float> nan{1, std::numeric_limits<float>::quiet_NaN(), 0, 0};
  std::vector<float> inf{std::numeric_limits<float>::infinity(), 0, 0, 0};
  std::vector<float> short_delta{1, 2, 3};
  ClientResult r{"a", 10, 0.0, UpdateView::Floats(good)};
  CHECK((*s)->AddResult(r).ok());
  r.delta = UpdateView::Floats(nan);
  CHECK((*s)->AddResult(r).code() == StatusCode::kDataLoss);
  r.delta = UpdateView::Floats(inf);
  CHECK((*s)->AddResult(r).code() == StatusCode::kDataLoss);
  r.delta = UpdateView::Floats(short_delta);
  CHECK((*s)->AddResult(r).code() == StatusCode::kInvalidArgument);
  auto codec = CreateCodec("identity");
  std::vector<uint8_t> garbage(13, 0xff);
  r.delta = UpdateView::Encoded(garbage, **codec);
  CHECK((*s)->AddResult(r).code() == StatusCode::kDataLoss);
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  REQUIRE(next->has_value());
  CHECK((**next).values()[3] == doctest::Approx(5.0));
}

TEST_CASE("FedAvg keeps the model when every client failed") {
  ParameterVector global = ParameterVector::Flat(std::vector<float>(4, 1.0f));
  auto s = CreateStrategy("fedavg", {});
  REQUIRE((*s)->BeginRound(1, global).ok());
  std::vector<ClientFailure> failures{{"a", DeadlineExceededError("late")}};
  auto next = (*s)->FinishRound(1, global, failures);
  REQUIRE(next.ok());
  CHECK_FALSE(next->has_value());
}

TEST_CASE("Unknown strategy names list the registered ones and bad options are named") {
  auto s = CreateStrategy("fedfoo", {});
  CHECK_FALSE(s.ok());
  CHECK(s.status().message().find("fedavg") != std::string::npos);
  auto t = CreateStrategy("fedavg", OptionMap{{"lr", "-1"}});
  CHECK_FALSE(t.ok());
  auto u = CreateStrategy("fedavg", OptionMap{{"learning_rat", "0.1"}});
  CHECK_FALSE(u.ok());
  CHECK(u.status().message().find("learning_rat") != std::string::npos);
}
