// DP-FedAvg: clipping bound, noise standard deviation, and the RDP
// accountant against published values and an independent numerical
// integration.
#include <doctest/doctest.h>

#include <cmath>

#include "verdant/aggregation/dp.h"
#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

namespace {

double Norm(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s);
}

// log A_alpha by direct numerical integration of its definition
// (Mironov et al. 2019, eq. 3): A = E_{z ~ N(0, s^2)} [((1-q) + q exp((2z-1)/(2s^2)))^alpha],
// in log space with the trapezoid rule on a fine grid. Independent of the
// series the accountant uses.
double LogAByIntegration(double q, double sigma, double alpha) {
  const double lo = -60.0 * sigma - 10, hi = 60.0 * sigma + 10 + alpha;
  const int steps = 400000;
  const double h = (hi - lo) / steps;
  std::vector<double> logs(steps + 1);
  double mx = -1e300;
  for (int i = 0; i <= steps; ++i) {
    const double z = lo + i * h;
    const double log_mu0 = -z * z / (2 * sigma * sigma) - std::log(sigma * std::sqrt(2 * M_PI));
    const double t = (2 * z - 1) / (2 * sigma * sigma);
    // log((1-q) + q e^t) computed stably.
    const double a = std::log1p(-q), b = std::log(q) + t;
    const double log_mix = std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
    logs[i] = log_mu0 + alpha * log_mix + ((i == 0 || i == steps) ? std::log(0.5) : 0.0);
    mx = std::max(mx, logs[i]);
  }
  double s = 0;
  for (double l : logs) s += std::exp(l - mx);
  return mx + std::log(s * h);
}

}  // namespace

TEST_CASE("DP-FedAvg clips each update to clip_norm (noise off)") {
  const size_t dim = 500;
  Rng rng(3);
  auto s = CreateStrategy("dp-fedavg", {{"clip_norm", "0.5"}, {"noise_multiplier", "0"}, {"seed", "1"}});
  REQUIRE(s.ok());
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.0f));
  REQUIRE((*s)->BeginRound(1, global).ok());
  std::vector<std::vector<float>> deltas(6, std::vector<float>(dim));
  std::vector<double> ref(dim, 0.0);
  for (int c = 0; c < 6; ++c) {
    const double scale = c < 3 ? 1e-3 : (c == 5 ? 1e6 : 1.0);  // some small, some huge
    for (auto& v : deltas[c]) v = static_cast<float>(rng.Normal() * scale);
    const double n = Norm(deltas[c]);
    const double k = n > 0.5 ? 0.5 / n : 1.0;
    for (size_t i = 0; i < dim; ++i) ref[i] += k * deltas[c][i] / 6.0;
    // Example counts must not matter: equal weights bound the sensitivity.
    REQUIRE((*s)->AddResult({"c", uint64_t(1 + 1000 * c), 0, UpdateView::Floats(deltas[c])}).ok());
  }
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  std::vector<float> step(dim);
  for (size_t i = 0; i < dim; ++i) step[i] = (**next).values()[i];
  CHECK(Norm(step) <= 0.5 * (1 + 1e-5));
  for (size_t i = 0; i < dim; ++i) CHECK(step[i] == doctest::Approx(ref[i]).epsilon(1e-4).scale(1e-6));
  auto m = (*s)->RoundMetrics();
  CHECK(m.at("dp_clipped_fraction") == doctest::Approx(3.0 / 6.0));
  CHECK(std::isinf(m.at("dp_epsilon")));  // no noise: no privacy
}

TEST_CASE("DP-FedAvg noise has std noise_multiplier * clip_norm / n on the mean") {
  const uint64_t seed = testing::TestSeed(2024);
  INFO("seed = " << seed);
  const size_t dim = 200000;
  const double z = 1.3, S = 2.0;
  const int n = 4;
  auto s = CreateStrategy("dp-fedavg", {{"clip_norm", "2"}, {"noise_multiplier", "1.3"},
                                        {"seed", std::to_string(seed)}});
  REQUIRE(s.ok());
  ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.0f));
  std::vector<float> zero(dim, 0.0f);
  REQUIRE((*s)->BeginRound(1, global).ok());
  for (int c = 0; c < n; ++c) REQUIRE((*s)->AddResult({"c", 10, 0, UpdateView::Floats(zero)}).ok());
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  double sum = 0, sq = 0;
  for (float v : (**next).values()) {
    sum += v;
    sq += double(v) * v;
  }
  const double mean = sum / dim, sd = std::sqrt(sq / dim - mean * mean);
  const double want = z * S / n;
  // Sample std of 2e5 normals: relative standard error 1/sqrt(2N) = 0.16%;
  // the mean's standard error is want / sqrt(N) = 0.0015.
  CHECK(sd == doctest::Approx(want).epsilon(0.01));
  CHECK(std::abs(mean) < 5 * want / std::sqrt(double(dim)));
  CHECK((*s)->RoundMetrics().at("dp_noise_std") == doctest::Approx(want));
}

TEST_CASE("DP-FedAvg derives the sample rate from clients_per_round and num_clients, and epsilon grows per round") {
  auto s = CreateStrategy("dp-fedavg", {{"clients_per_round", "10"}, {"num_clients", "1000"},
                                        {"noise_multiplier", "1.1"}, {"seed", "5"}});
  REQUIRE(s.ok());
  ParameterVector global = ParameterVector::Flat(std::vector<float>(16, 0.0f));
  std::vector<float> d(16, 0.01f);
  double prev = 0;
  for (int r = 1; r <= 3; ++r) {
    REQUIRE((*s)->BeginRound(r, global).ok());
    REQUIRE((*s)->AddResult({"c", 1, 0, UpdateView::Floats(d)}).ok());
    auto next = (*s)->FinishRound(r, global, {});
    REQUIRE(next.ok());
    auto m = (*s)->RoundMetrics();
    CHECK(m.at("dp_sample_rate") == doctest::Approx(0.01));
    CHECK(m.at("dp_rounds") == r);
    CHECK(m.at("dp_epsilon") > prev);
    prev = m.at("dp_epsilon");
  }
  // A round without results releases nothing and spends nothing.
  REQUIRE((*s)->BeginRound(4, global).ok());
  auto next = (*s)->FinishRound(4, global, {});
  REQUIRE(next.ok());
  CHECK_FALSE(next->has_value());
  CHECK((*s)->RoundMetrics().at("dp_epsilon") == prev);
}

TEST_CASE("RDP of the sampled Gaussian matches dp_accounting's published test values") {
  // google/differential-privacy, python/dp_accounting/rdp/rdp_privacy_accountant_test.py,
  // test_compute_rdp_poisson_sampled_gaussian: q = 0.01, sigma = 2.5, 50 steps.
  RdpAccountant acc({1.5, 2.5, 5, 50, 100});
  acc.Compose(0.01, 2.5, 50);
  const double want[] = {6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02};
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(acc.rdp()[i] == doctest::Approx(want[i]).epsilon(1e-4));
  }
  // test_compute_epsilon_delta_pure_dp: orders 2..32, rdp 1.1, delta 1e-5 ->
  // epsilon 1.32783806176 at order 32 (checks the RDP -> (eps, delta) conversion).
  // The optimum there is order 32, so one order reproduces it: an unsampled
  // Gaussian with RDP(32) = 32 / (2 sigma^2) = 1.1.
  RdpAccountant one({32});
  one.Compose(1.0, std::sqrt(32.0 / (2 * 1.1)), 1);  // RDP(32) = 32 / (2 sigma^2) = 1.1
  CHECK(one.rdp()[0] == doctest::Approx(1.1));
  auto [eps, order] = one.GetPrivacySpent(1e-5);
  CHECK(eps == doctest::Approx(1.32783806176).epsilon(1e-9));
  CHECK(order == 32);
}

TEST_CASE("RDP accountant agrees with direct numerical integration of A_alpha") {
  struct P {
    double q, sigma, alpha;
  };
  for (P p : {P{0.01, 1.1, 2}, P{0.01, 1.1, 2.5}, P{0.01, 1.1, 10.7}, P{0.1, 2.0, 5.3},
              P{0.05, 0.8, 32}, P{0.001, 1.0, 1.5}, P{0.3, 4.0, 7.5}}) {
    CAPTURE(p.q);
    CAPTURE(p.sigma);
    CAPTURE(p.alpha);
    const double rdp = RdpAccountant::ComputeRdp(p.q, p.sigma, p.alpha);
    const double ref = LogAByIntegration(p.q, p.sigma, p.alpha) / (p.alpha - 1);
    CHECK(rdp == doctest::Approx(ref).epsilon(1e-4).scale(1e-10));
  }
}

TEST_CASE("RDP accountant: known epsilon figures") {
  // Abadi et al. 2016, "Deep Learning with Differential Privacy", Sec. 3.1:
  // q = 0.01, sigma = 4, delta = 1e-5, T = 10000 -> eps ~ 1.26 with the
  // moments accountant (integer orders, older conversion). RDP with
  // fractional orders and the Balle et al. conversion is at least as tight.
  RdpAccountant a;
  a.Compose(0.01, 4.0, 10000);
  auto [eps_abadi, order_abadi] = a.GetPrivacySpent(1e-5);
  MESSAGE("q=0.01 sigma=4 T=10000 delta=1e-5: eps=" << eps_abadi << " (order " << order_abadi << ")");
  CHECK(eps_abadi < 1.26);
  CHECK(eps_abadi > 0.9);
  // The configuration DP-SGD tutorials use: q = 0.01, sigma = 1.1, T = 10000.
  RdpAccountant b;
  for (int i = 0; i < 100; ++i) b.Compose(0.01, 1.1, 100);  // composed in pieces, as rounds do
  auto [eps, order] = b.GetPrivacySpent(1e-5);
  MESSAGE("q=0.01 sigma=1.1 T=10000 delta=1e-5: eps=" << eps << " (order " << order << ")");
  RdpAccountant c;
  c.Compose(0.01, 1.1, 10000);
  CHECK(c.GetPrivacySpent(1e-5).first == doctest::Approx(eps).epsilon(1e-9));
  CHECK(b.steps() == 10000);
  // 5.63 at order 4.7 with the default orders; between the sigma = 4 figure
  // above and the unamplified Gaussian bound it must lie well inside this.
  CHECK(eps > 5.0);
  CHECK(eps < 6.5);
  // No sampling, no noise, nothing composed.
  RdpAccountant none;
  CHECK(none.GetPrivacySpent(1e-5).first == 0.0);
  RdpAccountant no_noise;
  no_noise.Compose(0.5, 0.0, 1);
  CHECK(std::isinf(no_noise.GetPrivacySpent(1e-5).first));
}
