// Every built-in strategy against a plain double-precision reference on
// random weighted updates, across several rounds (so the server optimizers'
// state is checked too), plus state round trips and option errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "verdant/aggregation/robust.h"
#include "verdant/aggregation/strategy.h"
#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

namespace {

using Vec = std::vector<double>;

struct Round {
  std::vector<std::vector<float>> deltas;
  std::vector<uint64_t> n;
};

std::vector<Round> MakeRounds(Rng& rng, int rounds, int clients, size_t dim) {
  std::vector<Round> out(rounds);
  for (auto& r : out) {
    r.deltas.assign(clients, std::vector<float>(dim));
    r.n.resize(clients);
    for (int c = 0; c < clients; ++c) {
      r.n[c] = 1 + rng.UniformInt(3000);
      const double scale = 0.05 + 0.1 * rng.Uniform();
      for (auto& v : r.deltas[c]) v = static_cast<float>(rng.Normal() * scale);
    }
  }
  return out;
}

Vec WeightedMean(const Round& r) {
  Vec m(r.deltas[0].size(), 0.0);
  double total = 0;
  for (auto x : r.n) total += double(x);
  for (size_t c = 0; c < r.deltas.size(); ++c)
    for (size_t i = 0; i < m.size(); ++i) m[i] += double(r.n[c]) / total * r.deltas[c][i];
  return m;
}

// Plain double-precision reference of each rule's aggregate.
Vec ReferenceAggregate(const std::string& rule, const Round& r, const OptionMap& o) {
  const size_t k = r.deltas.size(), dim = r.deltas[0].size();
  if (rule == "mean") return WeightedMean(r);
  Vec out(dim);
  if (rule == "median" || rule == "trimmedmean") {
    const double beta = std::stod(o.values().count("beta") ? o.values().at("beta") : "0.1");
    for (size_t i = 0; i < dim; ++i) {
      Vec col(k);
      for (size_t c = 0; c < k; ++c) col[c] = r.deltas[c][i];
      std::sort(col.begin(), col.end());
      if (rule == "median") {
        out[i] = k % 2 ? col[k / 2] : 0.5 * (col[k / 2 - 1] + col[k / 2]);
      } else {
        const size_t t = static_cast<size_t>(std::floor(beta * double(k)));
        out[i] = std::accumulate(col.begin() + t, col.end() - t, 0.0) / double(k - 2 * t);
      }
    }
    return out;
  }
  // krum / multikrum, brute force.
  const int64_t f = o.values().count("f") ? std::stoll(o.values().at("f")) : 1;
  int64_t m = rule == "krum" ? 1 : (o.values().count("m") ? std::stoll(o.values().at("m")) : 0);
  if (m == 0) m = int64_t(k) - f;
  const int64_t nb = std::max<int64_t>(1, int64_t(k) - f - 2);
  std::vector<std::pair<double, size_t>> scores;
  for (size_t a = 0; a < k; ++a) {
    Vec d;
    for (size_t b = 0; b < k; ++b) {
      if (a == b) continue;
      double s = 0;
      for (size_t i = 0; i < dim; ++i) s += std::pow(double(r.deltas[a][i]) - r.deltas[b][i], 2);
      d.push_back(s);
    }
    std::sort(d.begin(), d.end());
    scores.push_back({std::accumulate(d.begin(), d.begin() + nb, 0.0), a});
  }
  std::stable_sort(scores.begin(), scores.end(),
                   [](auto& x, auto& y) { return x.first < y.first; });
  std::fill(out.begin(), out.end(), 0.0);
  for (int64_t s = 0; s < m; ++s)
    for (size_t i = 0; i < dim; ++i) out[i] += r.deltas[scores[s].second][i] / double(m);
  return out;
}

// Double-precision server optimizers (Reddi et al. 2021, Algorithm 2).
struct RefOptimizer {
  std::string kind;  // sgd, momentum, adagrad, adam, yogi
  double lr = 1, beta1 = 0.9, beta2 = 0.99, tau = 1e-3, momentum = 0.9;
  Vec m, v;
  void Apply(Vec& x, const Vec& d) {
    if (m.empty()) {
      m.assign(x.size(), 0.0);
      v.assign(x.size(), kind == "momentum" ? 0.0 : tau * tau);
    }
    for (size_t i = 0; i < x.size(); ++i) {
      if (kind == "sgd") {
        x[i] += lr * d[i];
      } else if (kind == "momentum") {
        m[i] = momentum * m[i] + d[i];
        x[i] += lr * m[i];
      } else {
        m[i] = beta1 * m[i] + (1 - beta1) * d[i];
        const double d2 = d[i] * d[i];
        if (kind == "adagrad") v[i] += d2;
        if (kind == "adam") v[i] = beta2 * v[i] + (1 - beta2) * d2;
        if (kind == "yogi") v[i] -= (1 - beta2) * d2 * ((v[i] - d2) > 0 ? 1 : (v[i] - d2) < 0 ? -1 : 0);
        x[i] += lr * m[i] / (std::sqrt(v[i]) + tau);
      }
    }
  }
};

struct Case {
  std::string strategy;
  OptionMap options;
  std::string rule;
  RefOptimizer opt;
};

std::vector<Case> Cases() {
  auto ref = [](std::string kind, double lr) {
    RefOptimizer r;
    r.kind = std::move(kind);
    r.lr = lr;
    return r;
  };
  RefOptimizer adagrad = ref("adagrad", 0.1);
  adagrad.beta1 = 0.0;
  RefOptimizer adam_custom = ref("adam", 0.03);
  adam_custom.beta1 = 0.8;
  adam_custom.beta2 = 0.95;
  adam_custom.tau = 1e-2;
  RefOptimizer momentum = ref("momentum", 0.7);
  momentum.momentum = 0.5;
  return {
      {"fedavg", {}, "mean", ref("sgd", 1.0)},
      {"fedavg", {{"server_lr", "0.5"}}, "mean", ref("sgd", 0.5)},
      {"fedprox", {{"mu", "0.1"}}, "mean", ref("sgd", 1.0)},
      {"fedavgm", {}, "mean", ref("momentum", 1.0)},
      {"fedavgm", {{"server_lr", "0.7"}, {"momentum", "0.5"}}, "mean", momentum},
      {"fedadagrad", {}, "mean", adagrad},
      {"fedadam", {}, "mean", ref("adam", 0.1)},
      {"fedadam", {{"server_lr", "0.03"}, {"beta1", "0.8"}, {"beta2", "0.95"}, {"tau", "1e-2"}},
       "mean", adam_custom},
      {"fedyogi", {}, "mean", ref("yogi", 0.01)},
      {"median", {}, "median", ref("sgd", 1.0)},
      {"trimmedmean", {}, "trimmedmean", ref("sgd", 1.0)},
      {"trimmedmean", {{"beta", "0.25"}}, "trimmedmean", ref("sgd", 1.0)},
      {"krum", {{"f", "2"}}, "krum", ref("sgd", 1.0)},
      {"multikrum", {{"f", "2"}, {"m", "3"}}, "multikrum", ref("sgd", 1.0)},
      {"multikrum", {{"f", "1"}}, "multikrum", ref("sgd", 1.0)},
  };
}

}  // namespace

TEST_CASE("Every built-in matches its double-precision reference over several rounds") {
  const uint64_t seed = testing::TestSeed(5150);
  INFO("seed = " << seed);
  for (int clients : {9, 10}) {
    for (auto c : Cases()) {
      CAPTURE(c.strategy);
      CAPTURE(clients);
      Rng rng(seed + clients);
      const size_t dim = 1531;
      auto rounds = MakeRounds(rng, 4, clients, dim);
      std::vector<float> init(dim);
      for (auto& v : init) v = static_cast<float>(rng.Normal());
      ParameterVector global = ParameterVector::Flat(init);
      Vec ref(init.begin(), init.end());
      auto s = CreateStrategy(c.strategy, c.options);
      REQUIRE_MESSAGE(s.ok(), s.status().ToString());
      if (c.strategy == "fedprox") CHECK((*s)->ConfigureTrain(1, global).proximal_mu == doctest::Approx(0.1));
      for (size_t r = 0; r < rounds.size(); ++r) {
        REQUIRE((*s)->BeginRound(r + 1, global).ok());
        for (int k = 0; k < clients; ++k) {
          ClientResult res{"c" + std::to_string(k), rounds[r].n[k], 0.0, UpdateView::Floats(rounds[r].deltas[k])};
          REQUIRE((*s)->AddResult(res).ok());
        }
        auto next = (*s)->FinishRound(r + 1, global, {});
        REQUIRE(next.ok());
        REQUIRE(next->has_value());
        global = std::move(**next);
        c.opt.Apply(ref, ReferenceAggregate(c.rule, rounds[r], c.options));
        double max_err = 0, max_abs = 0;
        for (size_t i = 0; i < dim; ++i) {
          max_err = std::max(max_err, std::abs(double(global.values()[i]) - ref[i]));
          max_abs = std::max(max_abs, std::abs(ref[i]));
        }
        CAPTURE(r);
        // float32 state and accumulation vs double: a few ulps of O(1) values
        // per round (~1e-6); the bound leaves room for 4 rounds of drift.
        CHECK(max_err < 2e-5 * std::max(1.0, max_abs));
      }
      auto metrics = (*s)->RoundMetrics();
      CHECK(metrics["aggregated_updates"] == clients);
    }
  }
}

TEST_CASE("Robust rules ignore zero-weight updates and FedAvg gives them no weight") {
  std::vector<float> a{1, 1}, b{2, 2}, c{3, 3}, huge{1e9f, 1e9f};
  ParameterVector global = ParameterVector::Flat({0, 0});
  for (std::string name : {"median", "trimmedmean", "krum", "multikrum", "fedavg"}) {
    CAPTURE(name);
    auto s = CreateStrategy(name, {});
    REQUIRE(s.ok());
    REQUIRE((*s)->BeginRound(1, global).ok());
    for (auto* v : {&a, &b, &c}) REQUIRE((*s)->AddResult({"x", 10, 0, UpdateView::Floats(*v)}).ok());
    REQUIRE((*s)->AddResult({"z", 0, 0, UpdateView::Floats(huge)}).ok());
    auto next = (*s)->FinishRound(1, global, {});
    REQUIRE(next.ok());
    REQUIRE(next->has_value());
    CHECK(std::abs((**next).values()[0]) < 4.0f);
  }
}

TEST_CASE("Capability flag: linear rules stream, robust and DP rules need each update") {
  std::map<std::string, bool> expected{
      {"fedavg", false},     {"fedavgm", false}, {"fedprox", false}, {"fedadagrad", false},
      {"fedadam", false},    {"fedyogi", false}, {"median", true},   {"trimmedmean", true},
      {"krum", true},        {"multikrum", true}, {"dp-fedavg", true}};
  for (const auto& [name, needs] : expected) {
    CAPTURE(name);
    auto s = CreateStrategy(name, {});
    REQUIRE(s.ok());
    CHECK((*s)->NeedsIndividualUpdates() == needs);
    CHECK((*s)->Name() == name);
  }
  CHECK(StrategyRegistry().Names().size() >= expected.size());
}

TEST_CASE("Strategy state round-trips byte-exactly and the run continues identically") {
  const uint64_t seed = testing::TestSeed(77);
  INFO("seed = " << seed);
  for (std::string name : {"fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "median", "dp-fedavg"}) {
    CAPTURE(name);
    Rng rng(seed);
    const size_t dim = 257;
    auto rounds = MakeRounds(rng, 4, 5, dim);
    OptionMap opts;
    if (name == "dp-fedavg") opts = OptionMap{{"seed", "99"}, {"sample_rate", "0.1"}};
    auto a = CreateStrategy(name, opts);
    REQUIRE(a.ok());
    ParameterVector global = ParameterVector::Flat(std::vector<float>(dim, 0.5f));
    auto run_round = [&](Strategy& s, const ParameterVector& g, size_t r) {
      REQUIRE(s.BeginRound(r + 1, g).ok());
      for (size_t k = 0; k < rounds[r].deltas.size(); ++k)
        REQUIRE(s.AddResult({"c", rounds[r].n[k], 0, UpdateView::Floats(rounds[r].deltas[k])}).ok());
      auto next = s.FinishRound(r + 1, g, {});
      REQUIRE(next.ok());
      REQUIRE(next->has_value());
      return std::move(**next);
    };
    global = run_round(**a, global, 0);
    global = run_round(**a, global, 1);
    auto saved = (*a)->SaveState();
    REQUIRE(saved.ok());
    auto b = CreateStrategy(name, opts);
    REQUIRE(b.ok());
    REQUIRE((*b)->RestoreState(*saved).ok());
    auto saved_again = (*b)->SaveState();
    REQUIRE(saved_again.ok());
    CHECK(*saved_again == *saved);
    ParameterVector ga = run_round(**a, global, 2);
    ParameterVector gb = run_round(**b, global, 2);
    CHECK(std::equal(ga.values().begin(), ga.values().end(), gb.values().begin()));
    if (name == "dp-fedavg") {
      CHECK((*b)->RoundMetrics().at("dp_epsilon") == (*a)->RoundMetrics().at("dp_epsilon"));
      CHECK((*b)->RoundMetrics().at("dp_rounds") == 3);
    }
    // Malformed and foreign state are clear errors and leave the strategy usable.
    std::string truncated = saved->substr(0, saved->size() - 1);
    if (!saved->empty()) CHECK((*b)->RestoreState(truncated).code() == StatusCode::kDataLoss);
    CHECK((*b)->RestoreState("garbage").code() == StatusCode::kDataLoss);
    auto other = CreateStrategy(name == "fedadam" ? "fedyogi" : "fedadam", {});
    auto other_state = (*other)->SaveState();
    Status st = (*b)->RestoreState(*other_state);
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK(st.message().find("given to") != std::string::npos);
  }
}

TEST_CASE("Registry errors list the names, and bad options are clear errors") {
  auto s = CreateStrategy("fedfoo", {});
  REQUIRE_FALSE(s.ok());
  for (const char* n : {"fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi", "median",
                        "trimmedmean", "krum", "multikrum", "dp-fedavg"}) {
    CHECK(s.status().message().find(n) != std::string::npos);
  }
  struct Bad {
    std::string name;
    OptionMap o;
    std::string says;
  };
  std::vector<Bad> bad{
      {"fedadam", {{"beta1", "1.5"}}, "beta1"},
      {"fedadam", {{"tau", "0"}}, "tau"},
      {"fedyogi", {{"server_lr", "abc"}}, "server_lr"},
      {"fedadagrad", {{"beta2", "0.9"}}, "beta2"},  // adagrad has no beta2
      {"fedavgm", {{"momentum", "1"}}, "momentum"},
      {"fedprox", {{"mu", "-1"}}, "mu"},
      {"trimmedmean", {{"beta", "0.5"}}, "beta"},
      {"krum", {{"f", "-1"}}, "f"},
      {"krum", {{"m", "2"}}, "m"},  // m belongs to multikrum
      {"multikrum", {{"m", "-2"}}, "m"},
      {"median", {{"bta", "0.1"}}, "bta"},
      {"dp-fedavg", {{"clip_norm", "0"}}, "clip_norm"},
      {"dp-fedavg", {{"delta", "1"}}, "delta"},
      {"dp-fedavg", {{"clients_per_round", "10"}}, "num_clients"},
      {"dp-fedavg", {{"clients_per_round", "10"}, {"num_clients", "5"}}, "clients_per_round"},
      {"dp-fedavg", {{"sample_rate", "0"}}, "sample_rate"},
  };
  for (auto& b : bad) {
    CAPTURE(b.name);
    CAPTURE(b.says);
    auto r = CreateStrategy(b.name, b.o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find(b.says) != std::string::npos);
  }
  auto agg = CreateAggregator("medain", {});
  REQUIRE_FALSE(agg.ok());
  CHECK(agg.status().message().find("median") != std::string::npos);
  auto opt = CreateServerOptimizer("adamw", {});
  REQUIRE_FALSE(opt.ok());
  CHECK(opt.status().message().find("yogi") != std::string::npos);
}

TEST_CASE("Krum scores match brute force and Krum picks the cluster") {
  std::vector<std::vector<float>> rows{{0, 0}, {0.1f, 0}, {0, 0.1f}, {0.1f, 0.1f}, {50, 50}};
  std::vector<const float*> ptrs;
  for (auto& r : rows) ptrs.push_back(r.data());
  auto scores = KrumScores(ptrs, 2, 2);
  CHECK(scores[0] == doctest::Approx(0.01 + 0.01).epsilon(1e-6));
  CHECK(scores[4] > 1000);
  auto s = CreateStrategy("krum", {{"f", "1"}});
  ParameterVector global = ParameterVector::Flat({0, 0});
  REQUIRE((*s)->BeginRound(1, global).ok());
  for (auto& r : rows) REQUIRE((*s)->AddResult({"c", 1, 0, UpdateView::Floats(r)}).ok());
  auto next = (*s)->FinishRound(1, global, {});
  REQUIRE(next.ok());
  CHECK((**next).values()[0] < 0.2f);
  CHECK((*s)->RoundMetrics().at("krum_selected") == 1);
}
