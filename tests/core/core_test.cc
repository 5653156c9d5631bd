#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <set>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/registry.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"

using namespace verdant;

TEST_CASE("Status and Result carry codes and values") {
  Status s = InvalidArgumentError("bad");
  CHECK_FALSE(s.ok());
  CHECK(s.ToString() == "INVALID_ARGUMENT: bad");
  CHECK(s.WithContext("parsing").message() == "parsing: bad");
  Result<int> r(7);
  REQUIRE(r.ok());
  CHECK(*r == 7);
  Result<int> e(NotFoundError("nope"));
  CHECK_FALSE(e.ok());
  CHECK(e.status().code() == StatusCode::kNotFound);
  CHECK(e.value_or(3) == 3);
}

static Result<int> Twice(Result<int> in) {
  VERDANT_ASSIGN_OR_RETURN(int v, std::move(in));
  return v * 2;
}

TEST_CASE("VERDANT_ASSIGN_OR_RETURN propagates errors") {
  CHECK(*Twice(4) == 8);
  CHECK(Twice(Result<int>(DataLossError("x"))).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("ParameterVector layout arithmetic and finiteness") {
  Layout l({{"w", {2, 3}}, {"b", {3}}});
  CHECK(l.NumParameters() == 9);
  CHECK(l.Fingerprint() == Layout({{"w", {2, 3}}, {"b", {3}}}).Fingerprint());
  CHECK(l.Fingerprint() != Layout({{"w", {3, 2}}, {"b", {3}}}).Fingerprint());
  ParameterVector a(l), b(l);
  for (size_t i = 0; i < 9; ++i) {
    a.values()[i] = static_cast<float>(i);
    b.values()[i] = 1.0f;
  }
  auto d = a.Minus(b);
  REQUIRE(d.ok());
  CHECK(d->values()[4] == doctest::Approx(3.0));
  CHECK(a.AddScaled(b.values(), 2.0f).ok());
  CHECK(a.values()[0] == doctest::Approx(2.0));
  CHECK(a.AllFinite());
  a.values()[8] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(a.AllFinite());
  a.values()[8] = std::numeric_limits<float>::infinity();
  CHECK_FALSE(a.AllFinite());
  CHECK_FALSE(ParameterVector::FromValues(l, std::vector<float>(8)).ok());
  CHECK(a.AddScaled(std::vector<float>(3), 1.0f).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Rng is reproducible and roughly uniform") {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.Next();
    CHECK(x == b.Next());
    differs |= (x != c.Next());
  }
  CHECK(differs);
  Rng r(1);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) sum += r.Uniform();
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.01));
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    uint64_t v = r.UniformInt(7);
    CHECK(v < 7);
    seen.insert(v);
  }
  CHECK(seen.size() == 7);
  // Normal: mean 0, variance 1 within sampling error.
  double s1 = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    double z = r.Normal();
    s1 += z;
    s2 += z * z;
  }
  CHECK(std::abs(s1 / n) < 0.02);
  CHECK(s2 / n == doctest::Approx(1.0).epsilon(0.02));
  auto d = r.Dirichlet(0.5, 10);
  double t = 0;
  for (double x : d) {
    CHECK(x >= 0.0);
    t += x;
  }
  CHECK(t == doctest::Approx(1.0));
  // Fork is deterministic and does not advance the parent.
  Rng p(9);
  Rng f1 = p.Fork(3), f2 = p.Fork(3), f3 = p.Fork(4);
  CHECK(f1.Next() == f2.Next());
  CHECK(p.Fork(3).Next() != f3.Next());
}

TEST_CASE("Gamma sampler has the right mean") {
  Rng r(5);
  for (double shape : {0.3, 1.0, 4.0}) {
    double s = 0;
    const int n = 50000;
    for (int i = 0; i < n; ++i) s += r.Gamma(shape);
    CHECK(s / n == doctest::Approx(shape).epsilon(0.05));
  }
}

TEST_CASE("OptionMap typed getters and unknown keys") {
  OptionMap o{{"lr", "0.5"}, {"n", "3"}, {"flag", "true"}, {"bad", "x1"}, {"typo", "1"}};
  CHECK(*o.GetDouble("lr", 1.0) == 0.5);
  CHECK(*o.GetInt("n", 0) == 3);
  CHECK(*o.GetBool("flag", false));
  CHECK(*o.GetDouble("missing", 2.5) == 2.5);
  CHECK_FALSE(o.GetDouble("bad", 0).ok());
  Status st = o.CheckAllUsed("thing");
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("typo") != std::string::npos);
  CHECK(SplitSpec("topk:0.05") == std::pair<std::string, std::string>{"topk", "0.05"});
  CHECK(SplitList(" a, b,,c ") == std::vector<std::string>{"a", "b", "c"});
}

struct Thing {
  virtual ~Thing() = default;
  int v = 0;
};

TEST_CASE("Registry creates by name and lists names on error") {
  Registry<Thing> reg("thing");
  CHECK(reg.Register("one", [](const OptionMap&) -> Result<std::unique_ptr<Thing>> {
              auto t = std::make_unique<Thing>();
              t->v = 1;
              return t;
            }).ok());
  CHECK(reg.Register("one", nullptr).code() == StatusCode::kAlreadyExists);
  auto t = reg.Create("one", {});
  REQUIRE(t.ok());
  CHECK((*t)->v == 1);
  auto u = reg.Create("two", {});
  CHECK_FALSE(u.ok());
  CHECK(u.status().message().find("registered: one") != std::string::npos);
}

TEST_CASE("Units convert and multiply") {
  Energy e = Energy::KilowattHours(2.0);
  CHECK(e.joules() == doctest::Approx(7.2e6));
  Emissions c = e * CarbonIntensity::GramsPerKwh(250);
  CHECK(c.grams() == doctest::Approx(500.0));
  CHECK(Power::Watts(3).Over(10).joules() == doctest::Approx(30.0));
}

TEST_CASE("ManualClock advances only when told") {
  ManualClock c;
  auto t0 = c.Now();
  c.Advance(std::chrono::seconds(5));
  CHECK(ToSeconds(c.Now() - t0) == doctest::Approx(5.0));
  CHECK(FormatUtc(TimePoint(std::chrono::seconds(0))) == "1970-01-01T00:00:00Z");
}

TEST_CASE("Rng state round trips mid-stream including a spare normal") {
  Rng a(7);
  for (int i = 0; i < 13; ++i) a.Next();
  (void)a.Normal();  // leaves a spare normal behind
  Rng b = Rng::FromState(a.state());
  CHECK(b.seed() == a.seed());
  CHECK(a.Normal() == b.Normal());  // the spare
  for (int i = 0; i < 100; ++i) CHECK(a.Next() == b.Next());
  CHECK(a.Fork(3).Next() == b.Fork(3).Next());
}
