// Client selectors: the shared eligibility and fairness rules, every
// built-in policy on hand-built candidates with hand-computed expectations,
// participation statistics (Gini), options and state round trips.
#include "verdant/server/selectors.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "verdant/energy/carbon.h"
#include "verdant/server/selector.h"

using namespace verdant;
using doctest::Approx;
using std::chrono::hours;
using std::chrono::minutes;

namespace {

// 2022-01-01T00:00:00Z, on an hour boundary.
const TimePoint kT0 = *energy::ParseUtcTimestamp("2022-01-01T00:00:00Z");

ClientCandidate Cand(std::string id, uint64_t n = 100) {
  ClientCandidate c;
  c.client_id = std::move(id);
  c.num_examples = n;
  return c;
}

// A client with a known round energy and grid intensity.
ClientCandidate Green(std::string id, double joules, double g_per_kwh, uint64_t n = 100) {
  ClientCandidate c = Cand(std::move(id), n);
  c.expected_energy_joules = joules;
  c.intensity_g_per_kwh = g_per_kwh;
  return c;
}

SelectionRequest Req(uint64_t round, size_t target, TimePoint now = kT0) {
  SelectionRequest r;
  r.round = round;
  r.target = target;
  r.now = now;
  r.round_deadline = now;
  return r;
}

std::unique_ptr<ClientSelector> Make(const std::string& name, const OptionMap& o = {}) {
  auto s = CreateSelector(name, o);
  REQUIRE_MESSAGE(s.ok(), s.status().ToString());
  return std::move(*s);
}

std::set<std::string> Ids(const SelectionDecision& d) {
  return {d.selected.begin(), d.selected.end()};
}
std::set<std::string> Ids(std::initializer_list<const char*> ids) {
  return {ids.begin(), ids.end()};
}

// Selects, asserts success and no deferral.
SelectionDecision Pick(ClientSelector& s, const SelectionRequest& r,
                       const std::vector<ClientCandidate>& c, uint64_t seed = 1) {
  Rng rng(seed);
  auto d = s.Select(r, c, rng);
  REQUIRE_MESSAGE(d.ok(), d.status().ToString());
  REQUIRE_FALSE(d->defer_for.has_value());
  return *d;
}

// Hourly intensities for `zone` from `start`.
void AddHours(energy::SeriesIntensitySource& src, const std::string& zone, TimePoint start,
              std::vector<double> g) {
  for (size_t i = 0; i < g.size(); ++i) {
    src.AddPoint(zone, {start + hours(static_cast<int>(i)), hours(1), g[i]});
  }
}

}  // namespace

// ---- participation statistics -------------------------------------------------------------

TEST_CASE("participation Gini matches hand-computed values") {
  auto gini = [](std::vector<uint64_t> v) { return ParticipationGini(v); };
  CHECK(gini({1, 1, 1, 1}) == Approx(0.0));
  CHECK(gini({0, 0, 0, 4}) == Approx(0.75));
  CHECK(gini({4, 0, 0, 0}) == Approx(0.75));  // order does not matter
  CHECK(gini({1, 3}) == Approx(0.25));        // |1-3| * 2 / (2 * 4 * 2)
  CHECK(gini({0, 2, 4}) == Approx(16.0 / 36.0));
  CHECK(gini({}) == 0.0);
  CHECK(gini({0, 0}) == 0.0);

  std::map<std::string, ClientParticipation> m;
  m["a"].selected = 3;
  m["b"].selected = 1;
  m["c"].selected = 0;
  auto s = MakeParticipationStats(4, m);
  CHECK(s.rounds == 4);
  CHECK(s.gini == Approx(ParticipationGini(std::vector<uint64_t>{3, 1, 0})));
  CHECK(s.max_share == Approx(0.75));
  CHECK(s.never_selected == 1);
}

// ---- registry and options -------------------------------------------------------------------

TEST_CASE("random keeps its historical behaviour") {
  std::vector<ClientCandidate> c;
  for (const char* id : {"c7", "c2", "c9", "c0", "c4", "c1", "c8", "c3", "c6", "c5"})
    c.push_back(Cand(id));
  // The algorithm before the shared rules existed: ids sorted, shuffled, the first k.
  std::vector<std::string> expect;
  for (char i = '0'; i <= '9'; ++i) expect.push_back(std::string{'c', i});
  Rng ref(7);
  ref.Shuffle(std::span<std::string>(expect));
  expect.resize(4);

  auto s = Make("random");
  CHECK(s->Name() == "random");
  auto d = Pick(*s, Req(1, 4), c, 7);
  CHECK(d.selected == expect);
  CHECK(d.reason == "uniform random 4 of 10");

  RandomSelector direct;
  CHECK(Pick(direct, Req(1, 4), c, 7).selected == expect);
  // Candidates already in id order (as the coordinator passes them) give the same pick.
  std::vector<ClientCandidate> sorted = c;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.client_id < b.client_id; });
  CHECK(Pick(*Make("random"), Req(1, 4), sorted, 7).selected == expect);
  CHECK(Pick(direct, Req(2, 0), c, 7).selected.size() == 10);  // target 0 = all
  Rng rng(1);
  CHECK(direct.Select(Req(3, 1), {}, rng).status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("an unknown selector name lists the registered names") {
  auto s = CreateSelector("carbonn", {});
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == StatusCode::kInvalidArgument);
  for (const char* name :
       {"random", "eligible", "carbon", "carbon-deferral", "oort", "utility-per-gram"}) {
    CHECK_MESSAGE(s.status().message().find(name) != std::string::npos, name);
    CHECK(SelectorRegistry().Contains(name));
  }
}

TEST_CASE("unknown and out-of-range options are errors for every selector") {
  for (const auto& name : SelectorRegistry().Names()) {
    if (name.rfind("test-", 0) == 0) continue;
    CAPTURE(name);
    auto bad = CreateSelector(name, {{"max_sahre", "0.5"}});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == StatusCode::kInvalidArgument);
    CHECK(bad.status().message().find("max_sahre") != std::string::npos);
    for (auto [key, value] :
         std::vector<std::pair<const char*, const char*>>{{"max_share", "0"},
                                                          {"max_share", "1.5"},
                                                          {"min_battery", "150"},
                                                          {"starvation_rounds", "-1"},
                                                          {"require_idle", "maybe"}}) {
      auto r = CreateSelector(name, {{key, value}});
      CHECK_MESSAGE(!r.ok(), key);
      if (!r.ok()) CHECK(r.status().message().find(key) != std::string::npos);
    }
    // The shared options are accepted everywhere.
    CHECK(CreateSelector(name, {{"max_share", "0.5"},
                                {"starvation_rounds", "3"},
                                {"min_battery", "30"},
                                {"require_charging", "true"},
                                {"require_unmetered", "false"},
                                {"require_idle", "no"}})
              .ok());
  }
  CHECK_FALSE(CreateSelector("carbon", {{"epsilon", "2"}}).ok());
  CHECK_FALSE(CreateSelector("carbon", {{"window_h", "2"}}).ok());  // a carbon-deferral option
  CHECK_FALSE(CreateSelector("carbon-deferral", {{"min_saving", "1"}}).ok());
  CHECK_FALSE(CreateSelector("carbon-deferral", {{"window_h", "0"}}).ok());
  CHECK_FALSE(CreateSelector("oort", {{"epsilon", "0.2"}, {"epsilon_min", "0.5"}}).ok());
  CHECK_FALSE(CreateSelector("oort", {{"default_intensity", "100"}}).ok());  // not an oort option
  CHECK(CreateSelector("carbon-deferral", {{"window_h", "12"},
                                           {"max_delay_h", "0"},
                                           {"min_saving", "0.05"},
                                           {"epsilon", "0.1"},
                                           {"default_intensity", "436.5"},
                                           {"assumed_power_w", "4"},
                                           {"assumed_ms_per_sample", "2"}})
            .ok());
  CHECK(CreateSelector("utility-per-gram", {{"alpha", "1"}, {"default_intensity", "481"}}).ok());
}

// ---- eligible ---------------------------------------------------------------------------------

TEST_CASE("eligible filters by battery charging network and idle") {
  using energy::PowerSource;
  std::vector<ClientCandidate> c;
  auto add = [&](const char* id, float battery, bool charging, PowerSource ps, bool unmetered,
                 bool idle) {
    ClientCandidate x = Cand(id);
    x.battery_percent = battery;
    x.charging = charging;
    x.power_source = ps;
    x.unmetered_network = unmetered;
    x.idle = idle;
    c.push_back(x);
  };
  add("low", 10, false, PowerSource::kBattery, true, true);
  add("low_charging", 10, true, PowerSource::kUnknown, false, true);
  add("ok", 50, false, PowerSource::kBattery, true, false);
  add("server", -1, false, PowerSource::kGrid, true, true);
  add("unknown_on_battery", -1, false, PowerSource::kBattery, true, true);
  add("solar_low", 5, false, PowerSource::kSolar, false, false);

  auto pick_all = [&](const OptionMap& o) { return Ids(Pick(*Make("eligible", o), Req(1, 0), c)); };
  // Default: battery >= 20 % or charging / plugged in.
  CHECK(pick_all({}) == Ids({"low_charging", "ok", "server", "solar_low"}));
  CHECK(pick_all({{"require_charging", "true"}}) == Ids({"low_charging", "server", "solar_low"}));
  CHECK(pick_all({{"require_unmetered", "true"}}) == Ids({"ok", "server"}));
  CHECK(pick_all({{"require_idle", "true"}}) == Ids({"low_charging", "server"}));
  CHECK(pick_all({{"min_battery", "0"}}).size() == 6);
  CHECK(pick_all({{"min_battery", "60"}}) == Ids({"low_charging", "server", "solar_low"}));

  // A subset of the eligible when the target is smaller.
  auto d = Pick(*Make("eligible"), Req(1, 2), c);
  CHECK(d.selected.size() == 2);
  for (const auto& id : d.selected)
    CHECK(Ids({"low_charging", "ok", "server", "solar_low"}).count(id));
  CHECK(d.reason.find("2 of 6 ineligible") != std::string::npos);

  // The battery rule looks at the end of the round when energy and capacity are known.
  ClientCandidate phone = Cand("phone");
  phone.battery_percent = 25;
  phone.power_source = PowerSource::kBattery;
  EligibilityOptions rules;
  rules.min_battery_percent = 20;
  CHECK(IneligibleReason(phone, rules).empty());
  phone.battery_capacity_wh = 10;
  phone.expected_energy_joules = 2160;  // 0.6 Wh = 6 % of 10 Wh: 25 -> 19 %
  CHECK(IneligibleReason(phone, rules) == "battery 19% after the round below 20%");
  phone.charging = true;
  CHECK(IneligibleReason(phone, rules).empty());

  // Nobody eligible: an error that says why.
  std::vector<ClientCandidate> none = {c[0], c[4]};
  Rng rng(1);
  auto r = Make("eligible")->Select(Req(1, 1), none, rng);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kFailedPrecondition);
  CHECK(r.status().message().find("low: battery 10% below 20%") != std::string::npos);
  CHECK(r.status().message().find("unknown_on_battery: on battery with an unknown level") !=
        std::string::npos);
}

TEST_CASE("eligibility switches apply to every selector") {
  std::vector<ClientCandidate> c = {Green("clean_busy", 3600, 10), Green("dirty_idle", 3600, 500)};
  c[1].idle = true;
  CHECK(Pick(*Make("carbon"), Req(1, 1), c).selected == std::vector<std::string>{"clean_busy"});
  CHECK(Pick(*Make("carbon", {{"require_idle", "true"}}), Req(1, 1), c).selected ==
        std::vector<std::string>{"dirty_idle"});
}

// ---- carbon -----------------------------------------------------------------------------------

TEST_CASE("carbon estimates follow the documented fallbacks") {
  CarbonEstimateOptions o;  // 475 g/kWh, 3 W, 1 ms per sample
  SelectionRequest r = Req(1, 1);

  auto e = EstimateRoundCarbon(Green("a", 3600, 13), r, o);  // 0.001 kWh x 13 g/kWh
  CHECK(e.energy.joules() == Approx(3600));
  CHECK(e.energy_basis == "expected");
  CHECK(e.intensity_basis == "client");
  CHECK(e.emissions.grams() == Approx(0.013));
  CHECK(e.grams_per_sample == Approx(1.3e-4));

  ClientCandidate t = Cand("t", 10);
  t.expected_round_seconds = 100;  // 3 W x 100 s = 300 J
  t.last_train_seconds = 50;
  t.intensity_g_per_kwh = 60;
  e = EstimateRoundCarbon(t, r, o);
  CHECK(e.energy.joules() == Approx(300));
  CHECK(e.energy_basis == "round-time");
  CHECK(e.emissions.grams() == Approx(300 / 3.6e6 * 60));
  t.expected_round_seconds = 0;
  CHECK(EstimateRoundCarbon(t, r, o).energy.joules() == Approx(150));
  CHECK(EstimateRoundCarbon(t, r, o).energy_basis == "train-time");

  ClientCandidate s = Cand("s", 1000);  // 3 x 1000 x 1 ms = 3 s at 3 W = 9 J
  s.zone = "XX";
  e = EstimateRoundCarbon(s, r, o);
  CHECK(e.energy.joules() == Approx(9));
  CHECK(e.energy_basis == "samples");
  CHECK(e.intensity_basis == "default");
  CHECK(e.intensity.grams_per_kwh() == Approx(475));

  energy::ConstantIntensitySource hundred(CarbonIntensity::GramsPerKwh(100));
  r.intensity = &hundred;
  e = EstimateRoundCarbon(s, r, o);
  CHECK(e.intensity_basis == "source");
  CHECK(e.intensity.grams_per_kwh() == Approx(100));
  s.zone.clear();  // no zone: the source cannot be asked
  CHECK(EstimateRoundCarbon(s, r, o).intensity_basis == "default");

  CHECK(std::isinf(EstimateRoundCarbon(Green("empty", 3600, 13, 0), r, o).grams_per_sample));
}

TEST_CASE("carbon picks the lowest gCO2e per sample across zones") {
  std::vector<ClientCandidate> c = {
      Green("no", 3600, 13),         // 0.013 g / 100   = 1.3e-4 g per sample
      Green("es", 7200, 167, 1000),  // 0.334 g / 1000  = 3.34e-4
      Green("azps", 3600, 575),      // 0.575 g / 100   = 5.75e-3
      Green("br", 36000, 60),        // 0.6 g / 100     = 6e-3
      Green("empty", 1, 1, 0),       // no samples: never useful
  };
  ClientCandidate t = Cand("timed", 10);  // 300 J x 60 g/kWh = 0.005 g / 10 = 5e-4
  t.expected_round_seconds = 100;
  t.intensity_g_per_kwh = 60;
  c.push_back(t);

  auto s = Make("carbon");
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    CHECK(Ids(Pick(*s, Req(seed, 3), c, seed)) == Ids({"no", "es", "timed"}));
  }
  CHECK(Pick(*Make("carbon"), Req(1, 1), c).selected == std::vector<std::string>{"no"});
  CHECK(Ids(Pick(*Make("carbon"), Req(1, 5), c)) == Ids({"no", "es", "timed", "azps", "br"}));
  CHECK(Pick(*Make("carbon"), Req(1, 1), c).reason.find("by lowest expected gCO2e per sample") !=
        std::string::npos);
}

TEST_CASE("carbon breaks ties at random and explores with epsilon") {
  std::vector<ClientCandidate> twins = {Green("x", 3600, 100), Green("y", 3600, 100),
                                        Green("z", 3600, 900)};
  std::set<std::string> seen;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    auto d = Pick(*Make("carbon"), Req(1, 1), twins, seed);
    seen.insert(d.selected[0]);
  }
  CHECK(seen == Ids({"x", "y"}));

  seen.clear();
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    seen.insert(Pick(*Make("carbon", {{"epsilon", "1"}}), Req(1, 1), twins, seed).selected[0]);
  }
  CHECK(seen.count("z") == 1);  // the dirtiest is tried sometimes
}

// ---- carbon-deferral
// ------------------------------------------------------------------------------

TEST_CASE("carbon-deferral waits for a cleaner hour within the window") {
  energy::SeriesIntensitySource src("test");
  AddHours(src, "Z", kT0, {400, 380, 200, 390, 400, 400, 400, 400, 400, 400});
  ClientCandidate c = Cand("c");
  c.zone = "Z";
  c.expected_energy_joules = 3600;
  std::vector<ClientCandidate> cs = {c};

  auto s =
      Make("carbon-deferral", {{"window_h", "6"}, {"max_delay_h", "12"}, {"min_saving", "0.1"}});
  SelectionRequest r = Req(1, 1, kT0 + minutes(10));
  r.round_deadline = r.now + hours(24);
  r.intensity = &src;
  Rng rng(1);
  auto d = s->Select(r, cs, rng);
  REQUIRE(d.ok());
  REQUIRE(d->defer_for.has_value());
  CHECK(*d->defer_for == hours(2) - minutes(10));  // the start of the 200 g/kWh hour
  CHECK(d->selected.empty());
  CHECK(d->reason.find("waiting 1h50m") != std::string::npos);
  CHECK(s->Participation().rounds == 0);  // a deferral is not a round

  // Asked again at that hour: nothing cleaner ahead, so it selects.
  r.now = kT0 + hours(2);
  auto d2 = Pick(*s, r, cs);
  CHECK(d2.selected == std::vector<std::string>{"c"});
  CHECK(d2.reason.find("not deferring") != std::string::npos);
}

TEST_CASE("carbon-deferral weighs where against when") {
  // Zone A is flat at 100; zone B is 400 now and 50 in an hour. The best
  // client now is in A; in an hour it is in B, at half the carbon.
  energy::SeriesIntensitySource src("test");
  AddHours(src, "A", kT0, {100, 100, 100, 100});
  AddHours(src, "B", kT0, {400, 50, 400, 400});
  ClientCandidate a = Cand("a"), b = Cand("b");
  a.zone = "A";
  b.zone = "B";
  a.expected_energy_joules = b.expected_energy_joules = 3600;
  std::vector<ClientCandidate> cs = {a, b};

  auto s = Make("carbon-deferral");
  SelectionRequest r = Req(1, 1, kT0);
  r.round_deadline = kT0 + hours(24);
  r.intensity = &src;
  Rng rng(1);
  auto d = s->Select(r, cs, rng);
  REQUIRE(d.ok());
  REQUIRE(d->defer_for.has_value());
  CHECK(*d->defer_for == hours(1));
  r.now = kT0 + hours(1);
  CHECK(Pick(*s, r, cs).selected == std::vector<std::string>{"b"});

  // Plain carbon takes the cleanest client now.
  r.now = kT0;
  CHECK(Pick(*Make("carbon"), r, cs).selected == std::vector<std::string>{"a"});
}

TEST_CASE("carbon-deferral does not defer for a saving below the threshold") {
  energy::SeriesIntensitySource src("test");
  AddHours(src, "Z", kT0, {400, 390, 380, 375, 372, 370, 370, 370});  // at most 7.5 % cleaner
  ClientCandidate c = Cand("c");
  c.zone = "Z";
  std::vector<ClientCandidate> cs = {c};
  SelectionRequest r = Req(1, 1, kT0);
  r.round_deadline = kT0 + hours(24);
  r.intensity = &src;

  auto d = Pick(*Make("carbon-deferral", {{"min_saving", "0.1"}}), r, cs);
  CHECK(d.selected == std::vector<std::string>{"c"});
  CHECK(d.reason.find("<= min_saving 10%") != std::string::npos);

  Rng rng(1);
  auto d2 = Make("carbon-deferral", {{"min_saving", "0.05"}})->Select(r, cs, rng);
  REQUIRE(d2.ok());
  REQUIRE(d2->defer_for.has_value());
  CHECK(*d2->defer_for == hours(5));  // the first 370 g/kWh hour

  // Without an intensity source there is no forecast: select now.
  r.intensity = nullptr;
  CHECK(Pick(*Make("carbon-deferral"), r, cs).reason.find("no intensity source") !=
        std::string::npos);
}

TEST_CASE("carbon-deferral never holds a round past max delay or the deadline") {
  energy::SeriesIntensitySource src("test");
  AddHours(src, "Z", kT0, {400, 380, 200, 390, 400, 400, 400, 400});
  ClientCandidate c = Cand("c");
  c.zone = "Z";
  std::vector<ClientCandidate> cs = {c};
  SelectionRequest r = Req(1, 1, kT0 + minutes(10));
  r.intensity = &src;
  r.round_deadline = r.now + hours(24);

  // max_delay_h 1: only the 380 hour is reachable (5 % cleaner).
  CHECK(Pick(*Make("carbon-deferral", {{"max_delay_h", "1"}}), r, cs).selected.size() == 1);
  auto s = Make("carbon-deferral", {{"max_delay_h", "1"}, {"min_saving", "0.01"}});
  Rng rng(1);
  auto d = s->Select(r, cs, rng);
  REQUIRE(d.ok());
  REQUIRE(d->defer_for.has_value());
  CHECK(*d->defer_for == minutes(50));
  r.now += *d->defer_for;  // the coordinator comes back for the same round
  CHECK(Pick(*s, r, cs).reason.find("not deferring") != std::string::npos);

  // The round deadline bounds the wait too; a deadline at `now` (the
  // coordinator's default) means no deferral at all.
  r.now = kT0 + minutes(10);
  r.round_deadline = r.now + minutes(30);
  CHECK(Pick(*Make("carbon-deferral"), r, cs).selected.size() == 1);
  r.round_deadline = r.now;
  CHECK(Pick(*Make("carbon-deferral"), r, cs).reason.find("round deadline") != std::string::npos);
  r.round_deadline = r.now + hours(24);
  CHECK(Pick(*Make("carbon-deferral", {{"max_delay_h", "0"}}), r, cs).selected.size() == 1);
}

TEST_CASE("carbon-deferral always progresses under a falling forecast") {
  // Every hour is cleaner than the last: the selector would wait forever
  // if max_delay_h did not stop it.
  energy::SeriesIntensitySource src("test");
  std::vector<double> falling;
  for (int h = 0; h < 48; ++h) falling.push_back(800.0 * std::pow(0.7, h));
  AddHours(src, "Z", kT0, falling);
  ClientCandidate c = Cand("c");
  c.zone = "Z";
  std::vector<ClientCandidate> cs = {c};
  auto s = Make("carbon-deferral", {{"window_h", "2"}, {"max_delay_h", "5"}});
  for (uint64_t round = 1; round <= 3; ++round) {
    SelectionRequest r = Req(round, 1, kT0 + hours(static_cast<int>(10 * round)) + minutes(5));
    r.intensity = &src;
    r.round_deadline = r.now + hours(24);
    const TimePoint first = r.now;
    int asks = 0;
    while (true) {
      Rng rng(round);
      auto d = s->Select(r, cs, rng);
      REQUIRE(d.ok());
      if (!d->defer_for) break;
      r.now += *d->defer_for;
      REQUIRE(++asks < 20);
    }
    CHECK(r.now - first <= hours(5));
    CHECK(r.now - first > hours(4));  // it did use the allowance
  }
}

// ---- oort
// ------------------------------------------------------------------------------------------

TEST_CASE("oort formula matches hand-computed values") {
  // sqrt(0.1 ln 10 / 5) = 0.2145966
  CHECK(OortStalenessBonus(10, 5) == Approx(0.2145966).epsilon(1e-6));
  CHECK(OortStalenessBonus(10, 0) == 0.0);
  CHECK(OortStalenessBonus(1, 1) == 0.0);
  CHECK(OortSpeedPenalty(200, 100, 2) == Approx(0.25));
  CHECK(OortSpeedPenalty(50, 100, 2) == 1.0);
  CHECK(OortSpeedPenalty(0, 100, 2) == 1.0);  // unknown duration
  CHECK(OortSpeedPenalty(300, 100, 0.5) == Approx(std::sqrt(1.0 / 3.0)));
  // (0.5 + 0.2145966) x 0.25
  CHECK(OortUtility(0.5, 10, 5, 200, 100, 2) == Approx(0.1786491).epsilon(1e-6));
}

TEST_CASE("oort prefers high utility and fast clients") {
  auto explored = [](const char* id, double utility, double seconds) {
    ClientCandidate c = Cand(id);
    c.last_statistical_utility = utility;
    c.last_train_seconds = seconds;
    c.rounds_completed = 1;
    return c;
  };
  const OptionMap greedy = {{"epsilon", "0"}};
  std::vector<ClientCandidate> by_utility = {explored("x", 10, 10), explored("y", 5, 10),
                                             explored("z", 1, 10)};
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    CHECK(Pick(*Make("oort", greedy), Req(1, 1), by_utility, seed).selected ==
          std::vector<std::string>{"x"});
  }

  std::vector<ClientCandidate> by_speed = {explored("slow", 5, 40), explored("fast", 5, 10)};
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    CHECK(Pick(*Make("oort", {{"epsilon", "0"}, {"preferred_duration_s", "20"}}), Req(1, 1),
               by_speed, seed)
              .selected == std::vector<std::string>{"fast"});
    // Automatic T: the 30th percentile of known durations (10 s).
    CHECK(Pick(*Make("oort", greedy), Req(1, 1), by_speed, seed).selected ==
          std::vector<std::string>{"fast"});
  }
  // 8x the utility does not make up for a (10 s / 40 s)^2 = 1/16 penalty.
  std::vector<ClientCandidate> trade = {explored("slow_rich", 8, 40), explored("fast_poor", 1, 10)};
  CHECK(Pick(*Make("oort", greedy), Req(1, 1), trade).selected ==
        std::vector<std::string>{"fast_poor"});
  // Without the penalty (alpha 0) utility decides.
  CHECK(Pick(*Make("oort", {{"epsilon", "0"}, {"alpha", "0"}}), Req(1, 1), trade).selected ==
        std::vector<std::string>{"slow_rich"});

  // Staleness: at round 10, a client last selected in round 1 gets
  // sqrt(0.1 ln 10 / 1) = 0.48 on top, one selected in round 9 gets 0.16.
  std::vector<ClientCandidate> stale = {explored("recent", 5, 10), explored("old", 5, 10)};
  stale[0].last_round_selected = 9;
  stale[1].last_round_selected = 1;
  CHECK(Pick(*Make("oort", greedy), Req(10, 1), stale).selected == std::vector<std::string>{"old"});
}

TEST_CASE("oort explores never-tried clients") {
  std::vector<ClientCandidate> c;
  for (int i = 0; i < 4; ++i) {
    ClientCandidate e = Cand("e" + std::to_string(i));
    e.last_statistical_utility = 10 + i;
    c.push_back(e);
    c.push_back(Cand("u" + std::to_string(i)));
  }
  auto count = [](const SelectionDecision& d, char prefix) {
    return std::count_if(d.selected.begin(), d.selected.end(),
                         [&](const auto& id) { return id[0] == prefix; });
  };
  // epsilon 1: every slot explores.
  auto d = Pick(*Make("oort", {{"epsilon", "1"}, {"epsilon_min", "1"}}), Req(1, 2), c);
  CHECK(count(d, 'u') == 2);
  // epsilon 0.5: half and half.
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    d = Pick(*Make("oort", {{"epsilon", "0.5"}, {"epsilon_min", "0.5"}}), Req(1, 4), c, seed);
    CHECK(count(d, 'e') == 2);
    CHECK(count(d, 'u') == 2);
  }
  // More slots than untried clients: exploitation fills in.
  d = Pick(*Make("oort", {{"epsilon", "1"}, {"epsilon_min", "1"}}), Req(1, 6), c);
  CHECK(count(d, 'u') == 4);
  CHECK(count(d, 'e') == 2);

  // Exploration favours data: 1000 examples against 1.
  std::vector<ClientCandidate> sizes = {Cand("big", 1000), Cand("small", 1)};
  int big = 0;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    big += Pick(*Make("oort"), Req(1, 1), sizes, seed).selected[0] == "big";
  }
  CHECK(big >= 45);

  // The exploration fraction decays per decision to its floor.
  auto s = Make("oort");
  auto* oort = dynamic_cast<OortSelector*>(s.get());
  REQUIRE(oort != nullptr);
  for (uint64_t r = 1; r <= 3; ++r) Pick(*s, Req(r, 2), c);
  CHECK(oort->epsilon() == Approx(0.9 * std::pow(0.98, 3)));
  for (uint64_t r = 4; r <= 100; ++r) Pick(*s, Req(r, 2), c);
  CHECK(oort->epsilon() == Approx(0.3));
}

TEST_CASE("utility-per-gram trades utility against carbon") {
  auto explored = [](const char* id, double utility, double g_per_kwh) {
    ClientCandidate c = Green(id, 3600, g_per_kwh);
    c.last_statistical_utility = utility;
    c.rounds_completed = 1;
    return c;
  };
  // Oort: a (utility 10) wins. Per gram: a = 1.0 / 0.5 g, b = 0.8 / 0.1 g.
  std::vector<ClientCandidate> c = {explored("a", 10, 500), explored("b", 8, 100)};
  CHECK(Pick(*Make("oort", {{"epsilon", "0"}}), Req(1, 1), c).selected ==
        std::vector<std::string>{"a"});
  CHECK(Pick(*Make("utility-per-gram", {{"epsilon", "0"}}), Req(1, 1), c).selected ==
        std::vector<std::string>{"b"});
  // Exploration is carbon-weighted too: same data, 100x the carbon.
  std::vector<ClientCandidate> fresh = {Green("clean", 3600, 5), Green("dirty", 3600, 500)};
  int clean = 0;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    clean += Pick(*Make("utility-per-gram"), Req(1, 1), fresh, seed).selected[0] == "clean";
  }
  CHECK(clean >= 45);
}

// ---- fairness
// ----------------------------------------------------------------------------------------

TEST_CASE("max_share caps any client's share of rounds") {
  std::vector<ClientCandidate> c = {Green("a", 3600, 10), Green("b", 3600, 20),
                                    Green("c", 3600, 30), Green("d", 3600, 40)};
  auto capped = Make("carbon", {{"max_share", "0.5"}});
  auto plain = Make("carbon");
  for (uint64_t r = 1; r <= 6; ++r) {
    auto d = Pick(*capped, Req(r, 2), c);
    CHECK(Ids(d) == (r % 2 == 1 ? Ids({"a", "b"}) : Ids({"c", "d"})));
    if (r % 2 == 0) CHECK(d.reason.find("over max_share 0.5, skipped: a, b") != std::string::npos);
    CHECK(Ids(Pick(*plain, Req(r, 2), c)) == Ids({"a", "b"}));
  }
  auto fair = capped->Participation();
  CHECK(fair.rounds == 6);
  CHECK(fair.gini == Approx(0.0));
  CHECK(fair.max_share == Approx(0.5));
  auto unfair = plain->Participation();
  CHECK(unfair.gini == Approx(0.5));  // counts [6, 6, 0, 0]
  CHECK(unfair.never_selected == 2);
  CHECK(unfair.clients.at("a").selected == 6);
  CHECK(unfair.clients.at("d").selected == 0);
}

TEST_CASE("max_share fills the round when too few clients are under the cap") {
  std::vector<ClientCandidate> c = {Green("a", 3600, 10), Green("b", 3600, 20),
                                    Green("c", 3600, 30)};
  auto s = Make("carbon", {{"max_share", "0.5"}});
  CHECK(Ids(Pick(*s, Req(1, 2), c)) == Ids({"a", "b"}));
  auto d = Pick(*s, Req(2, 2), c);  // a and b are over the cap; only c is under
  CHECK(d.selected == std::vector<std::string>{"c", "a"});
  CHECK(d.reason.find("only 1 under max_share") != std::string::npos);
  // Two clients, two slots: the cap never empties a round.
  std::vector<ClientCandidate> two = {c[0], c[1]};
  auto t = Make("random", {{"max_share", "0.5"}});
  for (uint64_t r = 1; r <= 4; ++r) CHECK(Pick(*t, Req(r, 2), two).selected.size() == 2);
}

TEST_CASE("starvation floor forces in a client passed over too long") {
  std::vector<ClientCandidate> c = {Green("a", 3600, 10), Green("b", 3600, 20),
                                    Green("c", 3600, 30)};
  auto s = Make("carbon", {{"starvation_rounds", "2"}});
  std::vector<std::string> got;
  std::vector<std::string> reasons;
  for (uint64_t r = 1; r <= 5; ++r) {
    auto d = Pick(*s, Req(r, 1), c);
    REQUIRE(d.selected.size() == 1);
    got.push_back(d.selected[0]);
    reasons.push_back(d.reason);
  }
  // Round 3: b and c have waited 2 rounds (b first by id); round 4: c;
  // round 5: a has waited 2 rounds since round 2.
  CHECK(got == std::vector<std::string>{"a", "a", "b", "c", "a"});
  CHECK(reasons[2].find("forced in: b") != std::string::npos);

  // Only eligible clients are forced in.
  std::vector<ClientCandidate> e = {Cand("ok"), Cand("flat")};
  e[0].battery_percent = 90;
  e[1].battery_percent = 5;
  e[1].power_source = energy::PowerSource::kBattery;
  auto el = Make("eligible", {{"starvation_rounds", "1"}});
  for (uint64_t r = 1; r <= 4; ++r)
    CHECK(Pick(*el, Req(r, 1), e).selected == std::vector<std::string>{"ok"});
  auto p = el->Participation();
  CHECK(p.clients.at("flat").selected == 0);
  CHECK(p.clients.at("flat").first_seen_round == 1);
  CHECK(p.gini == Approx(0.5));  // [4, 0]
}

TEST_CASE("participation statistics count selections and outcomes") {
  std::vector<ClientCandidate> c = {Cand("a"), Cand("b"), Cand("c")};
  auto s = Make("random");
  for (uint64_t r = 1; r <= 3; ++r) {
    auto d = Pick(*s, Req(r, 0), c, r);
    std::vector<std::string> done = {"a", "b"}, failed = {"c"};
    s->OnRoundEnd(r, done, failed);
  }
  auto p = s->Participation();
  CHECK(p.rounds == 3);
  CHECK(p.clients.at("a") == ClientParticipation{3, 3, 0, 1, 3});
  CHECK(p.clients.at("c").failed == 3);
  CHECK(p.gini == 0.0);
  CHECK(p.max_share == Approx(1.0));
}

// ---- state
// -------------------------------------------------------------------------------------------

TEST_CASE("selector state round trips") {
  std::vector<ClientCandidate> c;
  for (int i = 0; i < 6; ++i) {
    ClientCandidate x = Green("c" + std::to_string(i), 3600 + 100 * i, 50 + 40 * i);
    x.last_train_seconds = 5 + i;
    c.push_back(x);
  }
  const OptionMap opts = {{"max_share", "0.6"}, {"starvation_rounds", "3"}};
  for (const char* name :
       {"random", "eligible", "carbon", "carbon-deferral", "oort", "utility-per-gram"}) {
    CAPTURE(name);
    auto a = Make(name, opts);
    for (uint64_t r = 1; r <= 4; ++r) {
      auto d = Pick(*a, Req(r, 2), c, r);
      // Report utilities as the coordinator would, for Oort.
      for (auto& x : c) {
        if (std::find(d.selected.begin(), d.selected.end(), x.client_id) != d.selected.end()) {
          x.last_statistical_utility =
              10.0 * static_cast<double>(r) + static_cast<double>(x.num_examples);
        }
      }
      a->OnRoundEnd(r, d.selected, {});
    }
    auto saved = a->SaveState();
    REQUIRE(saved.ok());
    CHECK(saved->find(std::string("\"selector\":\"") + name + "\"") != std::string::npos);

    auto b = Make(name, opts);
    REQUIRE(b->RestoreState(*saved).ok());
    auto again = b->SaveState();
    REQUIRE(again.ok());
    CHECK(*again == *saved);
    CHECK(b->Participation().clients == a->Participation().clients);
    CHECK(b->Participation().rounds == a->Participation().rounds);
    // Both continue identically.
    for (uint64_t r = 5; r <= 7; ++r) {
      CHECK(Pick(*a, Req(r, 2), c, 100 + r).selected == Pick(*b, Req(r, 2), c, 100 + r).selected);
    }
  }

  auto oort = Make("oort");
  auto carbon = Make("carbon");
  auto saved = carbon->SaveState();
  REQUIRE(saved.ok());
  CHECK(oort->RestoreState(*saved).code() == StatusCode::kInvalidArgument);
  CHECK(oort->RestoreState("{not json").code() == StatusCode::kDataLoss);
  CHECK(
      oort->RestoreState(R"({"format":"verdant.selector","selector":"oort","version":1})").code() ==
      StatusCode::kDataLoss);
  CHECK(oort->RestoreState("").ok());
}

TEST_CASE("carbon-deferral state keeps the first ask of a held round") {
  energy::SeriesIntensitySource src("test");
  AddHours(src, "Z", kT0, {400, 400, 400, 300, 100, 400, 400, 400, 400, 400});
  ClientCandidate c = Cand("c");
  c.zone = "Z";
  std::vector<ClientCandidate> cs = {c};
  const OptionMap o = {{"window_h", "3"}, {"max_delay_h", "3"}};
  auto a = Make("carbon-deferral", o);
  SelectionRequest r = Req(2, 1, kT0 + minutes(30));
  r.intensity = &src;
  r.round_deadline = kT0 + hours(24);
  Rng rng(1);
  auto d = a->Select(r, cs, rng);  // first ask at 00:30: may start until 03:30
  REQUIRE(d.ok());
  REQUIRE(d->defer_for.has_value());
  CHECK(*d->defer_for == hours(2) + minutes(30));  // 03:00, 300 g/kWh (25 % cleaner)

  // Restored elsewhere, the held round still counts from 00:30: at 03:00
  // only 30 min of the allowance are left and the 100 g/kWh hour (04:00)
  // is out of reach.
  auto b = Make("carbon-deferral", o);
  auto saved = a->SaveState();
  REQUIRE(saved.ok());
  REQUIRE(b->RestoreState(*saved).ok());
  r.now = kT0 + hours(3);
  CHECK(Pick(*b, r, cs).reason.find("no cleaner hour within 30m") != std::string::npos);
  // A selector that never saw the first ask would hold the round again.
  auto fresh = Make("carbon-deferral", o);
  auto d2 = fresh->Select(r, cs, rng);
  REQUIRE(d2.ok());
  REQUIRE(d2->defer_for.has_value());
  CHECK(*d2->defer_for == hours(1));
}

// ---- extension
// ---------------------------------------------------------------------------------------

namespace {

// The one-file custom selector of docs/selectors.md.
class FewestFailuresSelector final : public PolicySelector {
 public:
  explicit FewestFailuresSelector(PolicyOptions options) : PolicySelector(std::move(options)) {}
  std::string_view Name() const override { return "test-fewest-failures"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override {
    std::vector<const ClientCandidate*> c;
    for (const auto& x : pool.open) c.push_back(&x);
    std::sort(c.begin(), c.end(), [](auto* a, auto* b) {
      return std::tie(a->rounds_failed, a->client_id) < std::tie(b->rounds_failed, b->client_id);
    });
    SelectionDecision d;
    for (size_t i = 0; i < pool.slots; ++i) d.selected.push_back(c[i]->client_id);
    d.reason = "fewest failures";
    return d;
  }
};

Status RegisterFewestFailures(Registry<ClientSelector>& registry) {
  return registry.Register(
      "test-fewest-failures", [](const OptionMap& o) -> Result<std::unique_ptr<ClientSelector>> {
        VERDANT_ASSIGN_OR_RETURN(PolicyOptions p, ReadPolicyOptions(o));
        VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("selector 'test-fewest-failures'"));
        return std::unique_ptr<ClientSelector>(std::make_unique<FewestFailuresSelector>(p));
      });
}

// A policy that breaks the contract: picks `ids` whatever the pool holds.
class RogueSelector final : public PolicySelector {
 public:
  explicit RogueSelector(std::vector<std::string> ids = {"nobody"}) : PolicySelector({}), ids_(std::move(ids)) {}
  std::string_view Name() const override { return "rogue"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest&, const SelectionPool&, Rng&) override {
    SelectionDecision d;
    d.selected = ids_;
    return d;
  }

 private:
  std::vector<std::string> ids_;
};

}  // namespace

TEST_CASE("a one-file custom selector gets the shared rules") {
  REQUIRE(RegisterFewestFailures(SelectorRegistry()).ok());
  CHECK(RegisterFewestFailures(SelectorRegistry()).code() == StatusCode::kAlreadyExists);
  std::vector<ClientCandidate> c = {Cand("a"), Cand("b"), Cand("c")};
  c[0].rounds_failed = 3;
  c[1].rounds_failed = 1;
  auto s = Make("test-fewest-failures", {{"max_share", "0.5"}});
  CHECK(Ids(Pick(*s, Req(1, 2), c)) == Ids({"b", "c"}));
  // b and c are over the cap: a is in, and the policy fills the other slot from b and c.
  CHECK(Pick(*s, Req(2, 2), c).selected == std::vector<std::string>{"a", "c"});
  CHECK(s->Participation().rounds == 2);
  CHECK_FALSE(CreateSelector("test-fewest-failures", {{"typo", "1"}}).ok());

  RogueSelector rogue;
  Rng rng(1);
  CHECK(rogue.Select(Req(1, 1), c, rng).status().code() == StatusCode::kInternal);
  // An open candidate chosen twice breaks the contract too; once is fine.
  RogueSelector twice({"b", "b"});
  auto d = twice.Select(Req(1, 2), c, rng);
  CHECK(d.status().code() == StatusCode::kInternal);
  CHECK(d.status().message().find("'b'") != std::string::npos);
  RogueSelector once({"c", "a"});
  auto ok = once.Select(Req(1, 2), c, rng);
  REQUIRE(ok.ok());
  CHECK(ok->selected == std::vector<std::string>{"c", "a"});
}

TEST_CASE("a duplicated candidate id counts once, and its first entry wins") {
  // The first "a" is ineligible (battery 5 %, under the 20 % floor), the second is not.
  auto cand = [](std::string id, float battery) {
    ClientCandidate c = Cand(std::move(id));
    c.battery_percent = battery;
    c.power_source = energy::PowerSource::kBattery;
    return c;
  };
  const std::vector<ClientCandidate> sorted = {cand("a", 5), cand("a", 90), cand("b", 90)};
  // Unsorted, with the duplicates apart: only a set of seen ids finds them.
  const std::vector<ClientCandidate> unsorted = {cand("a", 5), cand("b", 90), cand("a", 90)};
  for (const auto* c : {&sorted, &unsorted}) {
    auto s = Make("eligible", {{"min_battery", "20"}});
    auto d = Pick(*s, Req(1, 0), *c);
    CHECK(d.selected == std::vector<std::string>{"b"});
    CHECK(s->Participation().clients.size() == 2);
  }
}
